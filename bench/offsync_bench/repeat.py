"""Steady figures: a workload run several times within one run, summarized as the median of each
figure with its spread (min..max), the repetitions themselves kept alongside."""

from __future__ import annotations

import statistics
from typing import Any

# The workloads measured REPEATS times per run: the latency workloads and the device-side
# throughputs. publish (must run first, once, on an empty bucket store) and connections
# (~90 s per run at full size, a memory curve rather than a latency) run once.
REPEATED = frozenset({"incremental", "initial_sync", "live", "fanout", "reconnect"})
REPEATS = 3


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One workload's figures over its repetitions. Every numeric figure is the median (the middle
    repetition's value, or the mean of the two middle ones); ``spread`` gives each one's
    [min, max]. Other figures come from the first repetition. A repetition that failed fails the
    whole: a median over the ones that happened to work would flatter the run."""
    if not runs:
        raise ValueError("no repetitions")
    failed = [(i, r) for i, r in enumerate(runs, 1) if r.get("status") == "failed"]
    if failed:
        i, r = failed[0]
        return {
            "status": "failed",
            "reason": f"repetition {i} of {len(runs)}: {r.get('reason')}",
            "repetitions": len(runs),
            "runs": runs,
        }
    out: dict[str, Any] = {}
    spread: dict[str, list[float]] = {}
    for key, first in runs[0].items():
        raw = [r.get(key) for r in runs]
        if _numeric(first) and all(_numeric(v) for v in raw):
            values: list[float] = [v for v in raw if v is not None]
            med = statistics.median(values)
            whole = all(isinstance(v, int) for v in values) and float(med).is_integer()
            out[key] = int(med) if whole else round(med, 2)
            if len(runs) > 1:
                spread[key] = [min(values), max(values)]
        else:
            out[key] = first
    out["repetitions"] = len(runs)
    if spread:
        out["spread"] = spread
    out["runs"] = runs
    return out
