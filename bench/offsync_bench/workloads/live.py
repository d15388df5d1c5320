"""live: one connected device; server-side changes to its records through the records API, one
at a time (the next after the previous arrived); latency from the write's commit timestamp
(data.records.modified_at, returned by the API) to the device storing the new version.

live_after_idle: the same, but each change comes after the stack sat quiet for ``QUIET_S``: what
the first change after a quiet spell costs where consumers stretch their fetch wait at rest (the
embedded broker, offsync_shared.fetch_wait)."""

from __future__ import annotations

import asyncio
from typing import Any

from offsync_bench import fixture, loadgen, setup
from offsync_bench.context import BenchContext
from offsync_bench.fleet import Fleet
from offsync_bench.stats import summary_ms

QUIET_S = 6.0  # longer than the hot window plus the stretch to the idle wait (about 3 s)
AFTER_IDLE_CHANGES = (5, 15)  # quick, full


async def run(ctx: BenchContext) -> dict[str, Any]:
    return await _changes(ctx, ctx.sizes.live_changes, quiet_s=0.0)


async def run_after_idle(ctx: BenchContext) -> dict[str, Any]:
    n = AFTER_IDLE_CHANGES[0] if ctx.quick else AFTER_IDLE_CHANGES[1]
    return {**await _changes(ctx, n, quiet_s=QUIET_S), "quiet_s": QUIET_S}


async def _changes(ctx: BenchContext, n: int, quiet_s: float) -> dict[str, Any]:
    await setup.side_published(ctx)
    latencies: list[float] = []
    missed = 0
    async with Fleet(ctx.sync_ws, ctx.jwt_secret, 1) as fleet, setup.records_client(ctx) as api:
        opened = await fleet.open([("bench-live", fixture.side_user(0), ":memory:")])
        if opened["failed"]:
            raise RuntimeError(f"device did not sync: {opened['errors']}")
        await fleet.all("record", on=True)
        for i in range(n):
            if quiet_s:
                await asyncio.sleep(quiet_s)  # the quiet spell is what this measures
            j = i % ctx.sizes.upload_changes
            rid = fixture.side_account(0, j)
            r = await api.patch(f"/v1/records/account/{rid}", json={"attributes": {"name": f"live {i}"}})
            if r.status_code >= 300:
                raise RuntimeError(f"PATCH {rid} -> {r.status_code} {r.text[:200]}")
            body = r.json()
            t = await fleet.one(0, "wait_for", id=rid, version=int(body["version"]), timeout=10.0)
            if t is None:
                missed += 1
                continue
            latencies.append(t - loadgen.epoch(body["modified_at"]))
    if missed:
        raise RuntimeError(f"{missed} of {n} changes never reached the device within 10 s")
    s = summary_ms(latencies)
    return {"p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "max_ms": s["max_ms"], "changes": s["samples"]}
