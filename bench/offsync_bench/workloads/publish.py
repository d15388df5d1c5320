"""publish: the workloads.md profile over the generated org, published through the admin API;
timed from the publish call until publish-service has committed every member's buckets."""

from __future__ import annotations

from typing import Any

from offsync_bench import fixture, setup
from offsync_bench.context import BenchContext
from offsync_bench.cpuwait import postgres_cpu_s, stack_window

_WAL = """SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS lsn,
                  (SELECT num_timed + num_requested FROM pg_stat_checkpointer) AS checkpoints"""


async def run(ctx: BenchContext) -> dict[str, Any]:
    loaded = await setup.org(ctx)
    if fixture.MAIN_PROFILE in loaded.published:
        raise RuntimeError("the main profile was already published in this run; publish must run first")
    users = [u["id"] for u in loaded.org.users]
    conn = await setup.pg(ctx)
    try:
        before = await conn.fetchrow(_WAL)
        # CPU per process over the publish (and the profile's definition just before it, a few
        # admin calls): steadier than the wall time on a shared machine.
        window = stack_window(ctx.pid, [])
        window.start()
        pg0 = postgres_cpu_s()
        t = await setup.publish_profile(ctx, fixture.MAIN_PROFILE, fixture.MAIN_ITEMS, users)
        cpu = window.stop()
        # Backends and parallel workers started during the publish too (the window's "postgres"
        # samples only the processes alive when it opened).
        cpu["postgres_all_cpu_s"] = round(postgres_cpu_s() - pg0, 2)
        after = await conn.fetchrow(_WAL)
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
        # What the database wrote meanwhile (the publish, and any autovacuum of the load): WAL
        # volume and the checkpoints it called for (each one makes the next write of every page
        # a full-page image), to tell whether a bigger org costs more than its share.
        "wal_mb": round((after["lsn"] - before["lsn"]) / 2**20),
        "checkpoints": int(after["checkpoints"] - before["checkpoints"]),
        "cpu": cpu,
    }
