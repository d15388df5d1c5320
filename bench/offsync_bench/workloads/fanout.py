"""fanout: many connected devices; server-side changes at a steady rate (the records API's batch
endpoint from a load generator process, the changes due in each ``WRITE_TICK_S`` in one request,
as an integration writes), each to a territory of one side business unit, so each reaches the
devices of that unit; latency from each change's commit timestamp to each device storing it."""

from __future__ import annotations

import time
from typing import Any

from offsync_bench import fixture, latency, loadgen, setup
from offsync_bench.context import BenchContext
from offsync_bench.cpuwait import stack_window
from offsync_bench.fleet import Fleet, default_processes
from offsync_bench.stats import summary_ms
from offsync_stack.testing import eventually

# One batch request per 50 ms: 5 changes at 100/s, each to another business unit's devices, so a
# device still gets one change per frame. One PATCH per change could not offer 100/s on this
# machine (~25-55/s: the records API's per-request cost with the fleet on the same 2 cores).
WRITE_TICK_S = 0.05


async def run(ctx: BenchContext) -> dict[str, Any]:
    await setup.side_published(ctx)
    sz = ctx.sizes
    groups = sz.fanout_groups
    specs = [(f"fan-{i}", fixture.side_user(i), ":memory:") for i in range(sz.fanout_devices)]
    per_group = [sum(1 for i in range(sz.fanout_devices) if i % groups == k) for k in range(groups)]
    n = int(sz.fanout_rate * sz.fanout_seconds)
    changes = []
    for c in range(n):
        k, j = c % groups, c // groups  # a record of its own per change (sizes.side_territories)
        changes.append(("territory", fixture.side_territory(k, j), fixture.side_territory_attributes(k, j, f" v{c}")))
    async with Fleet(ctx.sync_ws, ctx.jwt_secret, default_processes(len(specs))) as fleet:
        opened = await fleet.open(specs)
        if opened["failed"]:
            raise RuntimeError(f"{opened['failed']} of {len(specs)} devices did not sync: {opened['errors']}")
        await fleet.all("record", on=True)
        window = stack_window(ctx.pid, fleet.pids)
        window.start()
        gen = await loadgen.run_in_process(
            loadgen.batch_paced, ctx.records_url, ctx.admin_token(), changes, float(sz.fanout_rate), WRITE_TICK_S
        )
        if gen["error_count"]:
            raise RuntimeError(f"{gen['error_count']} writes failed, e.g. {gen['errors'][:2]}")
        commits = {(rid, v): t for _e, rid, v, t in gen["done"]}
        expected = {}
        for _e, rid, v, _t in gen["done"]:
            k = int(rid.split("-")[2])
            expected[(rid, v)] = per_group[k]
        want = sum(expected.values())
        arrivals: list[tuple[str, str, int, float]] = []

        async def counted() -> bool:
            # A count, not the arrivals: pickling ~100k timestamps in a device worker while the
            # last deliveries are still arriving would delay exactly the ones the p99 is made of.
            return sum(await fleet.all("arrived")) >= want

        async def delivered() -> bool:
            for part in await fleet.all("arrivals"):
                arrivals.extend(tuple(a) for a in part)
            return latency.commit_to_device(commits, arrivals, expected).unmatched == 0

        deadline = time.monotonic() + 60
        try:
            await eventually(counted, timeout=60, interval=0.1, message="as many arrivals as deliveries")
            # Arrivals also count repeats (a re-sent bucket): check each expected one came.
            await eventually(
                delivered, timeout=max(1.0, deadline - time.monotonic()), interval=0.5, message="every delivery"
            )
        except AssertionError:
            pass  # reported below as undelivered
        cpu = window.stop()
        for part in await fleet.all("arrivals"):
            arrivals.extend(tuple(a) for a in part)
    p = latency.commit_to_device(commits, arrivals, expected)
    if not p.latencies_s:
        raise RuntimeError("no delivery measured")
    s = summary_ms(p.latencies_s)
    out = {
        "deliveries_per_s": round(latency.rate(len(p.latencies_s), p.first_commit, p.last_arrival) or 0),
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "max_ms": s["max_ms"],
        "deliveries": len(p.latencies_s),
        "expected_deliveries": want,
        "undelivered": p.unmatched,
        "devices": len(specs),
        "changes": len(commits),
        "devices_per_change": round(want / max(1, len(commits)), 1),
        "offered_rate": sz.fanout_rate,
        "achieved_write_rate": round(gen["achieved_rate"], 1),
        "write_requests": gen["requests"],
        "write_tick_ms": round(WRITE_TICK_S * 1000),
        "cpu": cpu,
    }
    if out["achieved_write_rate"] < 0.9 * sz.fanout_rate:
        out["note"] = (
            f"the writer offered {sz.fanout_rate}/s but achieved {out['achieved_write_rate']}/s: "
            "the figures do not measure the workload as specified"
        )
    if p.unmatched:
        # Percentiles over only the deliveries that happened would flatter the run: report counts.
        out = {
            "status": "failed",
            "reason": f"{p.unmatched} of {want} deliveries missing after 60 s",
            **{k: v for k, v in out.items() if k not in ("deliveries_per_s", "p50_ms", "p99_ms", "max_ms")},
        }
    return out
