"""Reading on-CPU and run-queue time of process groups from schedstat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest

from offsync_bench.cpuwait import CpuWindow, parse_schedstat, postgres_cpu_s, sample, tree_cpu_s


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
    assert set(cast(dict[str, float], out["loadavg_1m"])) == {"start", "end"}


def _proc(root: Path, pid: int, comm: str, ppid: int, ticks: tuple[int, int, int, int]) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    u, s, cu, cs = ticks
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 {u} {s} {cu} {cs} 20 0 1 0\n")


def test_postgres_cpu_counts_every_backend_and_the_reaped_ones(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    _proc(tmp_path, 1, "python", 0, (999, 0, 0, 0))  # the harness: not counted
    # the postmaster: its reaped children (exited backends, parallel workers) are in cutime/cstime
    _proc(tmp_path, 10, "postgres", 1, (tick, 0, 2 * tick, tick))
    _proc(tmp_path, 11, "postgres", 10, (tick, tick, 0, 0))  # a live backend
    _proc(tmp_path, 12, "postgres", 10, (0, tick, 0, 0))  # another
    _proc(tmp_path, 20, "tansu", 1, (5 * tick, 0, 0, 0))  # the broker: not PostgreSQL
    assert tree_cpu_s(11, proc=tmp_path) == pytest.approx(2.0)
    assert postgres_cpu_s(1, proc=tmp_path) == pytest.approx(7.0)


def _busy(seconds: float) -> subprocess.Popen[bytes]:
    """A process that burns ``seconds`` of CPU, then waits for its stdin to close."""
    code = (
        f"import sys, time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\nsys.stdin.read()"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def _burnt(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + 30
    while sample([pid])[0] < seconds:
        assert time.monotonic() < deadline, "the busy process never got its CPU"
        time.sleep(0.01)


def test_a_process_that_comes_or_goes_within_the_window_counts_right() -> None:
    """A backend opened mid-window counts whole (found again at stop); one that exits counts
    nothing (never less than nothing: before, its start value was subtracted from the group)."""
    leaving, arriving = _busy(0.05), None
    try:
        _burnt(leaving.pid, 0.05)
        group = {"g": [leaving.pid]}
        w = CpuWindow(group, discover=lambda: {"g": [arriving.pid] if arriving else []})
        w.start()
        leaving.communicate(b"")  # exits within the window
        arriving = _busy(0.05)
        _burnt(arriving.pid, 0.05)
        out = w.stop()
        assert out["g"]["cpu_s"] >= 0.04  # type: ignore[index]
        assert CpuWindow({"g": []}, totals={"g": lambda: 7.5}).stop()["g"]["cpu_s"] == 7.5  # type: ignore[index]
    finally:
        for p in (leaving, arriving):
            if p is not None and p.poll() is None:
                p.communicate(b"")
