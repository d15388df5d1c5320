"""connections: idle SDK devices (in worker processes) connected to one sync-service process;
RSS of that process per connected device. sync-service is restarted first so the baseline is a
fresh heap, not what earlier workloads left behind; RSS is sampled at each step of the ramp
(the memory-vs-devices curve of docs/performance.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import psutil

from offsync_bench import fixture, setup
from offsync_bench.context import BenchContext
from offsync_bench.fleet import Fleet, default_processes
from offsync_stack.testing import eventually

STEPS = 5


async def settled_rss(pid: int) -> int:
    """RSS once two samples 200 ms apart agree within 2% (the process finished absorbing the
    last connections), or the last sample after 3 s."""
    proc = psutil.Process(pid)
    last = [proc.memory_info().rss]

    async def stable() -> bool:
        now = proc.memory_info().rss
        ok = abs(now - last[0]) <= 0.02 * last[0]
        last[0] = now
        return ok

    try:
        await eventually(stable, timeout=3, interval=0.2, message="RSS stable")
    except AssertionError:
        pass
    return last[0]


async def run(ctx: BenchContext) -> dict[str, Any]:
    await setup.side_published(ctx)
    n = ctx.sizes.connections
    users = ctx.sizes.side_users
    specs = [(f"idle-{i}", fixture.side_user(i % users), ":memory:") for i in range(n)]
    await ctx.restart("sync-service")
    pid = ctx.pid("sync-service")
    rss0 = await settled_rss(pid)
    curve = [(0, rss0 // 1024)]
    async with Fleet(ctx.sync_ws, ctx.jwt_secret, default_processes(n)) as fleet:
        step = (n + STEPS - 1) // STEPS
        connected = 0
        for k in range(0, n, step):
            opened = await fleet.open(specs[k : k + step], timeout=300)
            if opened["failed"]:
                raise RuntimeError(f"{opened['failed']} devices did not connect: {opened['errors']}")
            connected += opened["connected"]
            curve.append((connected, (await settled_rss(pid)) // 1024))
        open_fds = psutil.Process(pid).num_fds()
        await asyncio.sleep(0)
    rss_n = curve[-1][1]
    return {
        "devices": connected,
        "rss_kb_per_device": round((rss_n - rss0 // 1024) / connected, 1),
        "rss_baseline_mib": round(rss0 / 2**20, 1),
        "rss_mib": round(rss_n / 1024, 1),
        "server_fds": open_fds,
        "curve_devices_rss_kb": curve,
    }
