"""Pairs measured timestamps into latencies: server commit times of record changes with the
times devices stored them, or with the commit time of the bucket-store ops that made them
visible. Pure functions over plain tuples, so the math is unit-tested apart from any I/O."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Key = tuple[str, int]  # (record id, version)


@dataclass
class Pairing:
    latencies_s: list[float] = field(default_factory=list)
    unmatched: int = 0  # expected but never seen (a delivery that did not happen in time)
    first_commit: float | None = None
    last_arrival: float | None = None


def commit_to_device(
    commits: dict[Key, float],
    arrivals: Iterable[tuple[str, str, int, float]],
    expected_devices: dict[Key, int] | None = None,
) -> Pairing:
    """commits: (id, version) -> commit time; arrivals: (device id, record id, version, stored at).

    A device counts once per (id, version), at its first arrival (a record held through two
    buckets arrives twice). Arrivals of versions not in ``commits`` (initial download, other
    writers) are ignored. ``expected_devices`` ((id, version) -> how many devices should get it)
    turns missing deliveries into ``unmatched``.
    """
    first: dict[tuple[str, str, int], float] = {}
    for device, rid, version, t in arrivals:
        k = (device, rid, version)
        if (rid, version) in commits and (k not in first or t < first[k]):
            first[k] = t
    out = Pairing()
    delivered: dict[Key, int] = {}
    for (_device, rid, version), t in first.items():
        out.latencies_s.append(t - commits[(rid, version)])
        delivered[(rid, version)] = delivered.get((rid, version), 0) + 1
        out.last_arrival = t if out.last_arrival is None else max(out.last_arrival, t)
    if commits:
        out.first_commit = min(commits.values())
    if expected_devices is not None:
        out.unmatched = sum(max(0, n - delivered.get(k, 0)) for k, n in expected_devices.items())
    return out


def commit_to_op_visible(
    commits: dict[Key, float],
    ops: Iterable[tuple[str, int, str, int]],
    advanced: Sequence[tuple[float, dict[str, int]]],
) -> Pairing:
    """Commit of a record change -> the commit of the bucket-store ops that carry it.

    ops: (record id, version, bucket id, op id) read from sync.bucket_ops after the run;
    advanced: BucketsAdvanced events (committed_at, {bucket: newest op id}) in any order. An op
    is visible at the earliest event that advanced its bucket to at least its op id; a change is
    visible when all of its ops are (they commit together, so this is their one commit time).
    Changes with ops but no covering event are ``unmatched``.
    """
    per_bucket: dict[str, tuple[list[int], list[float]]] = {}
    for committed_at, buckets in sorted(advanced, key=lambda e: e[0]):
        for b, op_id in buckets.items():
            ids, times = per_bucket.setdefault(b, ([], []))
            # Keep (op id, earliest time it was covered) increasing in both, so bisect finds the
            # earliest event covering an op id.
            if ids and op_id <= ids[-1]:
                continue
            ids.append(op_id)
            times.append(committed_at)
    visible: dict[Key, float | None] = {}
    for rid, version, bucket, op_id in ops:
        key = (rid, version)
        if key not in commits:
            continue
        ids, times = per_bucket.get(bucket, ([], []))
        i = bisect.bisect_left(ids, op_id)
        t = times[i] if i < len(ids) else None
        prev = visible.get(key, 0.0)
        visible[key] = None if (t is None or prev is None) else max(prev, t)
    out = Pairing()
    for key, t in visible.items():
        if t is None:
            out.unmatched += 1
        else:
            out.latencies_s.append(t - commits[key])
            out.last_arrival = t if out.last_arrival is None else max(out.last_arrival, t)
    if commits:
        out.first_commit = min(commits.values())
    return out


def rate(count: int, start: float | None, end: float | None) -> float | None:
    """Events per second over [start, end]; None when there is no interval to divide by."""
    if start is None or end is None or end <= start:
        return None
    return count / (end - start)
