"""Steady figures: repetitions within one run summarized as median and spread."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_bench import results
from offsync_bench.__main__ import run_workloads
from offsync_bench.repeat import summarize


@pytest.mark.parametrize(
    "values, median, spread",
    [
        ([5.0, 1.0, 3.0], 3.0, [1.0, 5.0]),
        ([2.0, 2.0, 2.0], 2.0, [2.0, 2.0]),
        ([10, 30], 20, [10, 30]),
        ([7, 9, 8], 8, [7, 9]),
    ],
)
def test_each_figure_is_the_median_with_its_spread(values: list[float], median: float, spread: list[float]) -> None:
    out = summarize([{"status": "ok", "p99_ms": v, "note": f"run {i}"} for i, v in enumerate(values)])
    assert out["p99_ms"] == median and out["spread"]["p99_ms"] == spread
    assert out["repetitions"] == len(values) and [r["p99_ms"] for r in out["runs"]] == values
    assert out["note"] == "run 0" and "note" not in out["spread"]


def test_counts_stay_integers_and_unvaried_figures_print_without_a_spread() -> None:
    out = summarize(
        [{"status": "ok", "changes": 1000, "p99_ms": 2.0}, {"status": "ok", "changes": 1000, "p99_ms": 4.0}]
    )
    assert out["changes"] == 1000 and isinstance(out["changes"], int) and out["spread"]["changes"] == [1000, 1000]
    line = results.table({"live": out})
    assert "changes=1000," in line and "p99_ms=3.0 [2.0..4.0]" in line


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=7))
def test_the_median_lies_within_the_spread(values: list[float]) -> None:
    out = summarize([{"status": "ok", "x": v} for v in values])
    lo, hi = out["spread"]["x"] if len(values) > 1 else (values[0], values[0])
    assert lo - 0.01 <= out["x"] <= hi + 0.01


def test_one_failed_repetition_fails_the_workload() -> None:
    out = summarize([{"status": "ok", "p99_ms": 1.0}, {"status": "failed", "reason": "device did not sync"}])
    assert out["status"] == "failed" and out["reason"] == "repetition 2 of 2: device did not sync"
    assert "p99_ms" not in out


def test_repeated_workloads_run_three_times_and_the_others_once() -> None:
    calls: dict[str, int] = {"live": 0, "publish": 0}

    async def live(ctx: Any) -> dict[str, Any]:
        calls["live"] += 1
        return {"p99_ms": [9.0, 3.0, 5.0][calls["live"] - 1]}

    async def publish(ctx: Any) -> dict[str, Any]:
        calls["publish"] += 1
        return {"seconds": 1.5}

    figs = asyncio.run(run_workloads(None, ["publish", "live"], {"publish": publish, "live": live}, 3))
    assert calls == {"live": 3, "publish": 1}
    assert figs["live"]["p99_ms"] == 5.0 and figs["live"]["spread"]["p99_ms"] == [3.0, 9.0]
    assert "repetitions" not in figs["publish"] and figs["publish"]["seconds"] == 1.5
    assert "live           p99_ms=5.0 [3.0..9.0], repetitions=3" in results.table(figs)


def test_a_failing_repetition_stops_the_workload() -> None:
    calls = 0

    async def live(ctx: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise RuntimeError("device did not sync")

    figs = asyncio.run(run_workloads(None, ["live"], {"live": live}, 3))
    assert calls == 1 and figs["live"]["status"] == "failed" and "device did not sync" in figs["live"]["reason"]
