"""Knows how every topic must be configured: reads the one definition (``topics.yaml`` beside this
module), fits it to the cluster at hand (broker count, overrides) and tells how an existing topic
differs from it. Pure: no broker I/O here (that is :mod:`offsync_shared.bus`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

DEFINITION = Path(__file__).with_name("topics.yaml")


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the definition wants it (names without the deployment's prefix)."""

    name: str
    partitions: int
    replication_factor: int
    min_insync_replicas: int
    retention_ms: int
    cleanup_policy: str
    max_message_bytes: int

    def configs(self) -> dict[str, str]:
        """The topic-level Kafka configs this spec sets."""
        return {
            "min.insync.replicas": str(self.min_insync_replicas),
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            "max.message.bytes": str(self.max_message_bytes),
        }


@dataclass(frozen=True)
class Fitted:
    """A spec fitted to one cluster, with the full (prefixed) name and why it departs from the
    definition (fewer brokers than replicas, an override)."""

    full_name: str
    spec: TopicSpec
    notes: tuple[str, ...] = ()


def parse(text: str) -> dict[str, TopicSpec]:
    doc = yaml.safe_load(text) or {}
    defaults = doc.get("defaults") or {}
    specs: dict[str, TopicSpec] = {}
    for name, own in (doc.get("topics") or {}).items():
        merged = {**defaults, **(own or {})}
        try:
            specs[name] = TopicSpec(
                name=name,
                partitions=int(merged["partitions"]),
                replication_factor=int(merged["replication_factor"]),
                min_insync_replicas=int(merged["min_insync_replicas"]),
                retention_ms=int(merged["retention_ms"]),
                cleanup_policy=str(merged["cleanup_policy"]),
                max_message_bytes=int(merged["max_message_bytes"]),
            )
        except KeyError as exc:
            raise ValueError(f"topics.yaml: topic {name} has no {exc.args[0]} (nor a default)") from None
        if specs[name].partitions < 1 or specs[name].replication_factor < 1:
            raise ValueError(f"topics.yaml: topic {name} needs partitions and replication_factor >= 1")
    return specs


@cache
def load(path: Path = DEFINITION) -> dict[str, TopicSpec]:
    return parse(path.read_text())


def fit(
    spec: TopicSpec,
    prefix: str,
    *,
    brokers: int,
    partitions: int | None = None,
    replication_factor: int | None = None,
) -> Fitted:
    """The spec as it can be created on a cluster of ``brokers`` brokers: an explicit override
    wins; otherwise the definition's replication factor, capped at the broker count (noted, so
    the caller can warn). ``min.insync.replicas`` never exceeds the replication factor, or every
    ``acks=all`` produce would fail."""
    notes: list[str] = []
    rf = spec.replication_factor
    if replication_factor is not None:
        rf = replication_factor
    elif brokers < rf:
        notes.append(f"replication factor {rf} capped at the {brokers} broker(s) of this cluster")
        rf = max(1, brokers)
    isr = min(spec.min_insync_replicas, rf)
    fitted = TopicSpec(
        name=spec.name,
        partitions=partitions if partitions is not None else spec.partitions,
        replication_factor=rf,
        min_insync_replicas=isr,
        retention_ms=spec.retention_ms,
        cleanup_policy=spec.cleanup_policy,
        max_message_bytes=spec.max_message_bytes,
    )
    return Fitted(f"{prefix}{spec.name}", fitted, tuple(notes))


def fit_all(
    names: Iterable[str],
    prefix: str,
    *,
    brokers: int,
    partitions: int | None = None,
    replication_factor: int | None = None,
    specs: Mapping[str, TopicSpec] | None = None,
) -> list[Fitted]:
    table = specs if specs is not None else load()
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"topics.yaml defines no {', '.join(missing)}")
    return [
        fit(table[n], prefix, brokers=brokers, partitions=partitions, replication_factor=replication_factor)
        for n in names
    ]


@dataclass(frozen=True)
class Observed:
    """An existing topic as the cluster describes it; ``configs`` may be empty when the broker
    does not answer DescribeConfigs (the embedded one)."""

    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


def differences(want: TopicSpec, have: Observed) -> list[str]:
    """Each way an existing topic departs from its fitted spec, e.g.
    ``"partitions: 4 on the broker, 8 in topics.yaml"``. Only configs the broker reported are
    compared."""
    out = []
    if have.partitions != want.partitions:
        out.append(f"partitions: {have.partitions} on the broker, {want.partitions} in topics.yaml")
    if have.replication_factor != want.replication_factor:
        out.append(
            f"replication factor: {have.replication_factor} on the broker, {want.replication_factor} in topics.yaml"
        )
    for key, value in want.configs().items():
        if key in have.configs and have.configs[key] != value:
            out.append(f"{key}: {have.configs[key]} on the broker, {value} in topics.yaml")
    return out
