"""publish: the workloads.md profile over the generated org, published through the admin API;
timed from the publish call until publish-service has committed every member's buckets."""

from __future__ import annotations

from typing import Any

from offsync_bench import fixture, setup
from offsync_bench.context import BenchContext
from offsync_bench.cpuwait import postgres_cpu_s, stack_window


async def run(ctx: BenchContext) -> dict[str, Any]:
    loaded = await setup.org(ctx)
    if fixture.MAIN_PROFILE in loaded.published:
        raise RuntimeError("the main profile was already published in this run; publish must run first")
    users = [u["id"] for u in loaded.org.users]
    # CPU per process over the publish (and the profile's definition just before it, a few admin
    # calls): steadier than the wall time on a shared machine.
    window = stack_window(ctx.pid, [])
    window.start()
    pg0 = postgres_cpu_s()
    t = await setup.publish_profile(ctx, fixture.MAIN_PROFILE, fixture.MAIN_ITEMS, users)
    cpu = window.stop()
    # Backends and parallel workers started during the publish too (the window's "postgres"
    # samples only the processes alive when it opened).
    cpu["postgres_all_cpu_s"] = round(postgres_cpu_s() - pg0, 2)
    conn = await setup.pg(ctx)
    try:
        buckets = int(await conn.fetchval("SELECT count(*) FROM sync.buckets"))
        rows = int(await conn.fetchval("SELECT count(*) FROM sync.bucket_ops"))
        index = int(await conn.fetchval("SELECT count(*) FROM sync.record_index"))
        user_buckets = int(await conn.fetchval("SELECT count(*) FROM sync.user_buckets"))
    finally:
        await conn.close()
    return {
        "seconds": round(t["seconds"], 2),
        "rows_per_s": round(rows / t["seconds"]),
        "buckets": buckets,
        "bucket_ops": rows,
        "record_index_rows": index,
        "user_buckets": user_buckets,
        "api_seconds": round(t["api_seconds"], 2),
        "users": len(users),
        "records": loaded.record_count,
        "cpu": cpu,
    }
