"""Memory of the measured processes: resident set sizes now (each service, the broker, PostgreSQL
and the device fleet) and the peak over a window (sampled, for the one-shot workloads)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import psutil

from offsync_bench.cpuwait import infra_pids
from offsync_stack.processes import SERVICES


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total // 1024


def groups(service_pid: Callable[[str], int], fleet_pids: list[int] | None = None) -> dict[str, list[int]]:
    """The processes of a run by group: each service, the broker, PostgreSQL (all its backends)
    and, if given, the device fleet's workers."""
    out: dict[str, list[int]] = {s.name: [service_pid(s.name)] for s in SERVICES}
    out.update(infra_pids())
    if fleet_pids is not None:
        out["device_fleet"] = list(fleet_pids)
    return out


def rss_kb(service_pid: Callable[[str], int], fleet_pids: list[int] | None = None) -> dict[str, int]:
    """RSS in KiB of each group of processes (a group of several, e.g. PostgreSQL, summed)."""
    return {name: _rss(pids) for name, pids in groups(service_pid, fleet_pids).items()}


@dataclass
class Peak:
    """The largest RSS each group reached while sampled."""

    kb: dict[str, int] = field(default_factory=dict)

    def sample(self, now: dict[str, int]) -> None:
        for k, v in now.items():
            self.kb[k] = max(v, self.kb.get(k, 0))


@contextlib.asynccontextmanager
async def peak_rss(service_pid: Callable[[str], int], interval: float = 0.25) -> AsyncIterator[Peak]:
    """Samples every group's RSS every ``interval`` s while the block runs (and once at each end)."""
    peak = Peak()
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            peak.sample(await asyncio.to_thread(rss_kb, service_pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    task = asyncio.create_task(sampler())
    try:
        yield peak
    finally:
        stop.set()
        await task
        peak.sample(rss_kb(service_pid))
