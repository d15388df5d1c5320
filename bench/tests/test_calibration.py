"""The machine-speed probes recorded with every run (offsync_bench.calibration)."""

from __future__ import annotations

import os

import orjson

from offsync_bench import calibration, results
from offsync_bench.orgdata import Sizes


def test_probe_measures_each_figure() -> None:
    speed = calibration.probe()
    assert speed["interpreter_ms"] > 0
    assert speed["memory_read_ns"] >= 0
    assert 0 < speed["handoff_p50_us"] <= speed["handoff_p99_us"]
    assert speed["handoff_cpu_us"] > 0
    if len(os.sched_getaffinity(0)) >= 2:
        assert 0 < speed["cross_cpu_handoff_p50_us"] <= speed["cross_cpu_handoff_p99_us"]
    assert len(speed["load_average"]) == 3


def test_results_document_carries_the_calibration() -> None:
    speed = {"before": {"interpreter_ms": 80.0}, "after": {"interpreter_ms": 81.0}}
    doc = orjson.loads(results.document(1, Sizes().scaled(0.1), True, {}, calibration=speed))
    assert doc["calibration"] == speed
