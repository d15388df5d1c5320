"""Latency math: percentiles by the nearest-rank method over measured samples (never estimated)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least p% of samples at or below it."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    ordered = sorted(samples)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds of latencies given in seconds."""
    return {
        "p50_ms": round(percentile(samples_s, 50) * 1000, 2),
        "p99_ms": round(percentile(samples_s, 99) * 1000, 2),
        "max_ms": round(max(samples_s) * 1000, 2),
        "samples": len(samples_s),
    }
