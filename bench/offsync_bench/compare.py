"""``--compare``: which stacks one run measures side by side (names like ``tansu``, ``kafka``,
``kafka3-2p``), the environment each is started under, and the one document and markdown table
(stacks as columns) their figures end up in. Pure: the run itself is in ``__main__``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# broker word, optional node count (kafka only), optional "-<N>p" processes per worker
_SPEC = re.compile(r"^(?P<broker>tansu|embedded|kafka)(?P<nodes>\d+)?(?:-(?P<procs>\d+)p)?$")
MAX_NODES, MAX_PROCESSES = 5, 4  # what one small machine can start; more is a typo


@dataclass(frozen=True)
class StackSpec:
    """One stack of a comparison: its column name, broker, broker nodes and processes per worker."""

    name: str
    broker: str  # "embedded" (Tansu) or "kafka" (local Apache Kafka)
    kafka_brokers: int = 1
    processes: int = 1

    def env(self) -> dict[str, str | None]:
        """OFFSYNC_TEST_* for offsync_stack.infra.provide (None: unset it)."""
        if self.broker == "kafka":
            return {"OFFSYNC_TEST_BROKER": "kafka", "OFFSYNC_TEST_KAFKA_BROKERS": str(self.kafka_brokers)}
        return {"OFFSYNC_TEST_BROKER": None, "OFFSYNC_TEST_KAFKA_BROKERS": None}

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("name")
        if self.broker != "kafka":
            d.pop("kafka_brokers")
        return d


def parse_stacks(text: str) -> list[StackSpec]:
    """``tansu,kafka,kafka-2p`` -> specs; raises ValueError naming what it cannot read."""
    specs: list[StackSpec] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        m = _SPEC.match(name)
        if m is None:
            raise ValueError(
                f"unknown stack {raw.strip()!r}: use tansu or kafka, optionally kafka<nodes>, then -<N>p "
                "(e.g. tansu,kafka,kafka-2p,kafka3)"
            )
        broker = "kafka" if m["broker"] == "kafka" else "embedded"
        nodes = int(m["nodes"] or 1)
        procs = int(m["procs"] or 1)
        if m["nodes"] and broker != "kafka":
            raise ValueError(f"{name}: only kafka takes a node count")
        if not 1 <= nodes <= MAX_NODES or not 1 <= procs <= MAX_PROCESSES:
            raise ValueError(f"{name}: 1-{MAX_NODES} nodes and 1-{MAX_PROCESSES} processes")
        if any(s.name == name for s in specs):
            raise ValueError(f"{name} named twice")
        specs.append(StackSpec(name, broker, nodes, procs))
    if not specs:
        raise ValueError("no stack named")
    return specs


def document(common: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``runs``: stack name -> {"stack", "database", "workloads"}; ``common``: machine, sizes…"""
    return {**common, "compare": list(runs), "stacks": runs}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(doc: dict[str, Any]) -> str:
    """A table with one row per workload figure and one column per stack; a repeated workload
    shows its median; a workload that failed on a stack shows FAILED there (the reason below)."""
    names: list[str] = doc["compare"]
    stacks = doc["stacks"]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    failures: list[str] = []
    for stack in names:
        for workload, figs in stacks[stack]["workloads"].items():
            if figs.get("status") == "failed":
                rows.setdefault((workload, "status"), {})[stack] = "FAILED"
                failures.append(f"- {workload} on {stack}: {figs.get('reason')}")
                continue
            for key, value in figs.items():
                if key == "status" or isinstance(value, (dict, list)) or value is None:
                    continue
                rows.setdefault((workload, key), {})[stack] = _shown(value)
    header = "| workload | figure | " + " | ".join(names) + " |"
    rule = "|---|---|" + "---:|" * len(names)
    lines = [header, rule]
    for (workload, key), cells in rows.items():
        lines.append(f"| {workload} | {key} | " + " | ".join(cells.get(s, "–") for s in names) + " |")
    setup = "; ".join(
        f"{s}: "
        + ", ".join(f"{k} {v}" for k, v in stacks[s]["stack"].items())
        + f" (wall {stacks[s]['wall_seconds']} s)"
        for s in names
    )
    out = ["\n".join(lines), "", f"Stacks: {setup}."]
    if failures:
        out += ["", "Failed:", *failures]
    return "\n".join(out) + "\n"
