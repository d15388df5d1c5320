"""reconnect: devices that each missed some changes reconnect at the same moment; seconds from
the first reconnect until the last device has stored its checkpoint (caught up), and the CPU
each process spent on the storm (``cpu``; the gateway's per reconnect: ``gateway_cpu_ms_per_device``,
steadier than the seconds on a shared machine)."""

from __future__ import annotations

from typing import Any

from offsync_bench import fixture, loadgen, setup
from offsync_bench.context import BenchContext
from offsync_bench.cpuwait import stack_window
from offsync_bench.fleet import Fleet, default_processes
from offsync_stack.testing import eventually


async def run(ctx: BenchContext) -> dict[str, Any]:
    await setup.side_published(ctx)
    sz = ctx.sizes
    users = sz.side_users
    specs = [(f"rc-{i}", fixture.side_user(i % users), ":memory:") for i in range(sz.reconnect_devices)]
    async with Fleet(ctx.sync_ws, ctx.jwt_secret, default_processes(len(specs))) as fleet:
        opened = await fleet.open(specs, timeout=300)
        if opened["failed"]:
            raise RuntimeError(f"{opened['failed']} devices did not sync: {opened['errors']}")
        await fleet.all("close")
        # Every side business unit gets `reconnect_behind` territory changes: every device is
        # that many changes behind.
        changes = [
            (
                "territory",
                fixture.side_territory(k, j % sz.side_territories),
                fixture.side_territory_attributes(k, j, f" behind {j}"),
            )
            for k in range(sz.fanout_groups)
            for j in range(sz.reconnect_behind)
        ]
        gen = await loadgen.run_in_process(loadgen.patch_paced, ctx.records_url, ctx.admin_token(), changes, 1000.0)
        if gen["error_count"]:
            raise RuntimeError(f"{gen['error_count']} writes failed: {gen['errors'][:2]}")
        keys = [(rid, v) for _e, rid, v, _t in gen["done"]]
        conn = await setup.pg(ctx)
        try:
            await eventually(
                lambda: _all_in_store(conn, keys), timeout=120, interval=0.1, message="changes in the bucket store"
            )
        finally:
            await conn.close()
        window = stack_window(ctx.pid, fleet.pids)
        window.start()
        res = await fleet.all("resync", timeout=300.0)
        cpu = window.stop()
    ends = [d for part in res for d in part["devices"]]
    errors = [e for *_, e in ends if e]
    if errors:
        raise RuntimeError(f"{len(errors)} of {len(ends)} devices did not catch up: {errors[:2]}")
    start = min(s for _, s, _, _ in ends)
    end = max(e for _, _, e, _ in ends)
    conns = [n for part in res for n in part.get("connections", ())]
    return {
        "seconds_to_all_caught_up": round(end - start, 2),
        "devices": len(ends),
        "changes_behind": sz.reconnect_behind,
        "connections_per_device_mean": round(sum(conns) / max(len(conns), 1), 2),
        "connections_per_device_max": max(conns, default=0),
        "gateway_cpu_ms_per_device": round(_cpu_s(cpu, "sync-service") * 1000 / max(len(ends), 1), 3),
        "cpu": cpu,
    }


def _cpu_s(cpu: dict[str, Any], group: str) -> float:
    g = cpu.get(group)
    return float(g["cpu_s"]) if isinstance(g, dict) else 0.0


async def _all_in_store(conn: Any, keys: list[tuple[str, int]]) -> bool:
    latest: dict[str, int] = {}
    for rid, v in keys:
        latest[rid] = max(v, latest.get(rid, 0))
    return await setup.ops_present(conn, list(latest.items())) >= len(latest)
