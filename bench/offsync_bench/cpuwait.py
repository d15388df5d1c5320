"""How much CPU the measured processes got, and how long they waited for it: per process group,
on-CPU seconds and run-queue seconds (runnable, not running) over a workload's window, from
/proc/<pid>/task/*/schedstat. On a shared 2-core box, latencies are often mostly the second
figure: it says how much of a figure is the machine's load rather than the code's cost."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def parse_schedstat(text: str) -> tuple[float, float]:
    """``<ns on cpu> <ns waiting on a run queue> <timeslices>`` -> seconds (on cpu, waiting)."""
    on_cpu, waiting, *_ = text.split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def sample(pids: list[int], proc: Path = PROC) -> tuple[float, float]:
    """Summed over every thread of the processes; ones that are gone count as nothing."""
    on_cpu = waiting = 0.0
    for pid in pids:
        try:
            tasks = list((proc / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                c, w = parse_schedstat((task / "schedstat").read_text())
            except (OSError, ValueError):
                continue
            on_cpu += c
            waiting += w
    return on_cpu, waiting


class CpuWindow:
    """``start()`` then ``stop()`` -> {group: {"cpu_s", "runqueue_wait_s"}} for the window."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._start: dict[str, tuple[float, float]] = {}
        self._load: float | None = None

    def start(self) -> None:
        self._start = {g: sample(p) for g, p in self.groups.items()}
        self._load = os.getloadavg()[0]

    def stop(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for g, pids in self.groups.items():
            c, w = sample(pids)
            c0, w0 = self._start.get(g, (0.0, 0.0))
            out[g] = {"cpu_s": round(c - c0, 2), "runqueue_wait_s": round(w - w0, 2)}
        out["loadavg_1m"] = {"start": round(self._load or 0.0, 2), "end": round(os.getloadavg()[0], 2)}
        return out
