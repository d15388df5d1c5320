"""Latency pairing: commit times with device arrivals and with bucket-store visibility."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from offsync_bench import latency, results
from offsync_bench.__main__ import run_workloads
from offsync_bench.orgdata import Sizes


def test_device_pairing_counts_first_arrival_per_device_and_ignores_unknown_versions() -> None:
    commits = {("r1", 2): 100.0, ("r2", 5): 101.0}
    arrivals = [
        ("d1", "r1", 2, 100.010),
        ("d1", "r1", 2, 100.030),  # same record through two buckets: first counts
        ("d2", "r1", 2, 100.020),
        ("d1", "r2", 5, 101.005),
        ("d1", "r9", 1, 99.0),  # initial download of something not changed: ignored
        ("d1", "r1", 1, 99.5),  # an older version: ignored
    ]
    p = latency.commit_to_device(commits, arrivals, {("r1", 2): 2, ("r2", 5): 2})
    assert sorted(round(x, 3) for x in p.latencies_s) == [0.005, 0.01, 0.02]
    assert p.unmatched == 1  # d2 never got r2 v5
    assert p.first_commit == 100.0 and p.last_arrival == pytest.approx(101.005)


def test_op_visibility_uses_the_earliest_event_covering_the_op() -> None:
    commits = {("a", 2): 10.0, ("b", 2): 10.5, ("c", 2): 11.0}
    ops = [("a", 2, "B1", 7), ("a", 2, "B2", 8), ("b", 2, "B1", 9), ("c", 2, "B3", 50), ("old", 1, "B1", 1)]
    advanced = [(10.04, {"B1": 7, "B2": 8}), (10.52, {"B1": 9}), (10.60, {"B1": 12})]  # B3 never advanced
    p = latency.commit_to_op_visible(commits, ops, list(reversed(advanced)))  # order of arrival does not matter
    assert sorted(round(x, 3) for x in p.latencies_s) == [0.02, 0.04]
    assert p.unmatched == 1


def test_rate() -> None:
    assert latency.rate(100, 1.0, 3.0) == 50.0
    assert latency.rate(100, None, 3.0) is None
    assert latency.rate(1, 3.0, 3.0) is None


def test_a_failing_workload_reports_why_and_no_figure() -> None:
    async def good(ctx: Any) -> dict[str, Any]:
        return {"p50_ms": 1.0}

    async def bad(ctx: Any) -> dict[str, Any]:
        raise RuntimeError("device did not sync")

    figs = asyncio.run(run_workloads(None, ["bad", "good"], {"bad": bad, "good": good}))
    assert figs["bad"]["status"] == "failed" and "device did not sync" in figs["bad"]["reason"]
    assert set(figs["bad"]) == {"status", "reason", "wall_seconds"}
    assert figs["good"]["status"] == "ok" and figs["good"]["p50_ms"] == 1.0
    doc = orjson.loads(results.document(1, Sizes().scaled(0.1), True, figs))
    assert doc["bad"]["status"] == "failed" and doc["sizes"]["users"] == 200 and doc["machine"]["cores"]
    assert doc["fixture"] == results.FIXTURE
    assert "FAILED: RuntimeError: device did not sync" in results.table(figs)
