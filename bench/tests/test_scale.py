"""The scale workloads' sizes and selection, and the cost curves drawn from the run history."""

from __future__ import annotations

from pathlib import Path

import pytest

from offsync_bench import plot
from offsync_bench.orgdata import Sizes
from offsync_bench.workloads import DEFAULT_WORKLOADS, SCALE_WORKLOADS, WORKLOADS
from offsync_bench.workloads.scale import PUBLISH_RECORDS, PUBLISH_USERS, scaled


def test_scale_workloads_run_only_when_asked_for() -> None:
    assert set(SCALE_WORKLOADS) == {"fanout_10k", "publish_20k"} <= set(WORKLOADS)
    assert not set(SCALE_WORKLOADS) & set(DEFAULT_WORKLOADS)
    assert set(DEFAULT_WORKLOADS) | set(SCALE_WORKLOADS) == set(WORKLOADS)


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.002])
def test_publish_20k_sizes_hit_users_and_records(scale: float) -> None:
    users, records = scaled(PUBLISH_USERS, scale), scaled(PUBLISH_RECORDS, scale)
    sizes = Sizes().for_publish(users, records)
    assert sizes.users == users
    assert abs(sizes.records - records) <= 4, (sizes.records, records)
    assert sizes.contacts / sizes.accounts == pytest.approx(3, rel=0.01), "the entities keep their proportions"


def history() -> list[dict[str, object]]:
    ok = "ok"
    return [
        {
            "publish": {"status": ok, "users": 200, "records": 70_000, "seconds": 1.0},
            "fanout": {"status": ok, "devices": 100, "p99_ms": 40.0, "rss_kb_per_device": 20.0},
            "connections": {"status": ok, "devices": 1000, "curve_devices_rss_kb": [[0, 50_000], [500, 60_000]]},
        },
        {"publish_20k": {"status": ok, "users": 20_000, "records": 5_000_000, "seconds": 90.0}},
        {"fanout_10k": {"status": ok, "devices": 10_000, "p99_ms": 400.0, "rss_kb_per_device": 15.0}},
        {"fanout_10k": {"status": "failed", "reason": "x", "devices": 20_000}},
    ]


def test_cost_curves_come_from_every_run_of_each_size() -> None:
    h = history()
    assert plot.publish_points(h) == [(200, 70_000, 1.0), (20_000, 5_000_000, 90.0)]
    assert plot.fanout_points(h) == [(100, 40.0), (10_000, 400.0)]
    assert plot.memory_per_device(h) == [(100, 20.0), (500, 20.0), (10_000, 15.0)]


def test_the_plot_is_drawn(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    assert plot.draw(history(), out) and out.stat().st_size > 1000
    assert not plot.draw([], tmp_path / "none.png")
