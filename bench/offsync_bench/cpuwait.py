"""How much CPU the measured processes got, and how long they waited for it: per process group,
on-CPU seconds and run-queue seconds (runnable, not running) over a workload's window, from
/proc/<pid>/task/*/schedstat. On a shared 2-core box, latencies are often mostly the second
figure: it says how much of a figure is the machine's load rather than the code's cost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
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


def infra_pids(root: int | None = None, proc: Path = PROC) -> dict[str, list[int]]:
    """The embedded broker's and PostgreSQL's processes among ``root``'s descendants (this
    process by default), by group: {"broker": [...], "postgres": [...]}."""
    children: dict[int, list[int]] = {}
    comm: dict[int, str] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        pid = int(d.name)
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        comm[pid] = name
        children.setdefault(int(rest[1]), []).append(pid)
    out: dict[str, list[int]] = {"broker": [], "postgres": []}
    todo = list(children.get(root or os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if comm[pid].startswith("tansu"):
            out["broker"].append(pid)
        elif comm[pid].startswith("postgres"):
            out["postgres"].append(pid)
    return out


def _stat(pid: int, proc: Path) -> tuple[int, list[str]]:
    text = (proc / str(pid) / "stat").read_text()
    return pid, text[text.rindex(")") + 2 :].split()


def tree_cpu_s(root: int, proc: Path = PROC) -> float:
    """CPU seconds of ``root`` and all its descendants, the exited ones included (a process's
    reaped children are in its cutime/cstime): what a PostgreSQL instance spent, its backends
    and parallel workers that came and went during a window included."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    fields: dict[int, list[str]] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            pid, rest = _stat(int(d.name), proc)
        except (OSError, ValueError):
            continue
        parent[pid] = int(rest[1])
        fields[pid] = rest
    total = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        own = fields.get(pid)
        if own is None:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of /proc/<pid>/stat (11-14 after the name)
        total += sum(int(x) for x in own[11:15]) / tick
        todo.extend(c for c, p in parent.items() if p == pid)
    return total


def postgres_cpu_s(root: int | None = None, proc: Path = PROC) -> float:
    """CPU seconds of every embedded PostgreSQL instance under ``root`` (this process by
    default) so far, exited backends and workers included: take the difference over a window."""
    pids = set(infra_pids(root, proc)["postgres"])
    tops = []
    for pid in pids:
        try:
            if int(_stat(pid, proc)[1][1]) not in pids:
                tops.append(pid)
        except (OSError, ValueError):
            continue
    return sum(tree_cpu_s(pid, proc) for pid in tops)


PROFILE_ENV = "OFFSYNC_BENCH_PROFILE"  # a directory: py-spy every process of the window into it
# Samples per second (default 100): a 1-2 s window at 100 Hz gives a service ~100 samples, too few
# to rank its functions; more samples cost the profiled processes more of the cores.
PROFILE_RATE_ENV = "OFFSYNC_BENCH_PROFILE_RATE"


def _py_spy() -> str | None:
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


class CpuWindow:
    """``start()`` then ``stop()`` -> {group: {"cpu_s", "runqueue_wait_s"}} for the window.

    Counted per process: one that starts within the window counts whole (schedstat starts at its
    birth), one that exits within it counts nothing after its start (its threads are gone). So a
    group whose processes come and go (PostgreSQL's backends: a pool opens a connection
    mid-window) is found again at ``stop()`` by ``discover``, and its on-CPU seconds can come from
    ``totals`` instead (e.g. :func:`postgres_cpu_s`, which includes the exited ones).

    With ``OFFSYNC_BENCH_PROFILE=<dir>`` and py-spy installed, each process is also sampled over
    exactly the window (``<dir>/<group>-<pid>.txt``, py-spy's raw collapsed stacks): where the
    CPU of a workload went, not of the set-up around it (``OFFSYNC_BENCH_PROFILE_RATE``: samples
    per second, default 100)."""

    def __init__(
        self,
        groups: dict[str, list[int]],
        discover: Callable[[], dict[str, list[int]]] | None = None,
        totals: dict[str, Callable[[], float]] | None = None,
    ) -> None:
        self.groups = groups
        self.discover = discover
        self.totals = totals or {}
        self._start: dict[str, dict[int, tuple[float, float]]] = {}
        self._start_totals: dict[str, float] = {}
        self._load: float | None = None
        self._profilers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self._start = {g: {pid: sample([pid]) for pid in pids} for g, pids in self.groups.items()}
        self._start_totals = {g: total() for g, total in self.totals.items()}
        self._load = os.getloadavg()[0]
        out, spy = os.environ.get(PROFILE_ENV), _py_spy()
        if out and spy:
            Path(out).mkdir(parents=True, exist_ok=True)
            for g, pids in self.groups.items():
                for pid in pids:
                    cmd = [
                        spy,
                        "record",
                        "--nonblocking",
                        "-r",
                        os.environ.get(PROFILE_RATE_ENV, "100"),
                        "-f",
                        "raw",
                        "-o",
                        f"{out}/{g}-{pid}.txt",
                        "-p",
                        str(pid),
                    ]
                    self._profilers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _stop_profilers(self) -> None:
        for prof in self._profilers:
            prof.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for prof in self._profilers:
            try:
                prof.wait(timeout=30)
            except subprocess.TimeoutExpired:
                prof.kill()
        self._profilers = []

    def stop(self) -> dict[str, object]:
        out: dict[str, object] = {}
        found = self.discover() if self.discover is not None else {}
        for g, pids in self.groups.items():
            before = self._start.get(g, {})
            cpu = wait = 0.0
            for pid in dict.fromkeys([*pids, *found.get(g, [])]):
                c, w = sample([pid])
                if c == 0.0 and w == 0.0:
                    continue  # gone: nothing of it is known past the start
                c0, w0 = before.get(pid, (0.0, 0.0))
                cpu += c - c0
                wait += w - w0
            if g in self.totals:
                cpu = self.totals[g]() - self._start_totals.get(g, 0.0)
            out[g] = {"cpu_s": round(cpu, 2), "runqueue_wait_s": round(wait, 2)}
        out["loadavg_1m"] = {"start": round(self._load or 0.0, 2), "end": round(os.getloadavg()[0], 2)}
        self._stop_profilers()
        return out


SERVICES = ("conflict-service", "publish-service", "sync-service")


def stack_window(service_pid: Callable[[str], int], fleet_pids: list[int]) -> CpuWindow:
    """A window over what a device workload exercises: the three services on its path, the
    device fleet, and the embedded broker and PostgreSQL."""
    return CpuWindow(
        {**{s: [service_pid(s)] for s in SERVICES}, "device_fleet": fleet_pids, **infra_pids()},
        discover=infra_pids,
        totals={"postgres": postgres_cpu_s},
    )
