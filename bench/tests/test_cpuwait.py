"""Reading on-CPU and run-queue time of process groups from schedstat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from offsync_bench.cpuwait import CpuWindow, parse_schedstat, sample


@pytest.mark.parametrize(
    "text, expected",
    [("1000000000 500000000 12\n", (1.0, 0.5)), ("0 0 0", (0.0, 0.0)), ("2500000 7500000 3", (0.0025, 0.0075))],
    ids=["seconds", "idle", "fractions"],
)
def test_parse_schedstat(text: str, expected: tuple[float, float]) -> None:
    assert parse_schedstat(text) == pytest.approx(expected)


def _task(root: Path, pid: int, tid: int, text: str) -> None:
    d = root / str(pid) / "task" / str(tid)
    d.mkdir(parents=True)
    (d / "schedstat").write_text(text)


def test_sample_sums_threads_and_skips_what_is_gone(tmp_path: Path) -> None:
    _task(tmp_path, 10, 10, "1000000000 2000000000 5")
    _task(tmp_path, 10, 11, "500000000 0 1")
    _task(tmp_path, 20, 20, "garbage")
    assert sample([10, 20, 30], proc=tmp_path) == pytest.approx((1.5, 2.0))


def test_window_over_this_process() -> None:
    me = [os.getpid()]
    w = CpuWindow({"me": me})
    w.start()
    # The window reports hundredths of a second, and the kernel books on-CPU time at ticks and
    # switches: work until at least 0.02 s is booked, not for a fixed count.
    before, deadline = sample(me)[0], time.monotonic() + 30
    while sample(me)[0] < before + 0.02:
        assert time.monotonic() < deadline, "schedstat never moved"
        sum(i * i for i in range(100_000))
    out = w.stop()
    assert out["me"]["cpu_s"] > 0 and out["me"]["runqueue_wait_s"] >= 0  # type: ignore[index]
    assert set(out["loadavg_1m"]) == {"start", "end"}  # type: ignore[arg-type]
