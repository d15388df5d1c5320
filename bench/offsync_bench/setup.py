"""Brings the stack to the state a workload needs — org loaded, profiles published — once per
run, whatever subset of workloads runs (``--only live`` publishes without measuring it)."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import httpx

from offsync_bench import fixture
from offsync_bench.context import BenchContext
from offsync_stack.testing import eventually


def admin_client(ctx: BenchContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=ctx.admin_url, headers={"Authorization": f"Bearer {ctx.admin_token()}"}, timeout=120
    )


def records_client(ctx: BenchContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=ctx.records_url, headers={"Authorization": f"Bearer {ctx.admin_token()}"}, timeout=120
    )


async def pg(ctx: BenchContext) -> asyncpg.Connection:
    return await fixture._connect(ctx.pg_dsn)


async def org(ctx: BenchContext) -> fixture.Loaded:
    if "org_error" in ctx.scratch:
        raise RuntimeError(f"the org fixture failed to load earlier: {ctx.scratch['org_error']}")
    if "org" not in ctx.scratch:
        try:
            async with admin_client(ctx) as admin:
                loaded = await fixture.load(ctx.pg_dsn, admin, ctx.seed, ctx.sizes)
        except Exception as exc:
            ctx.scratch["org_error"] = f"{type(exc).__name__}: {exc}"
            raise
        print(
            f"org loaded: {loaded.record_count} records, {len(loaded.org.users)} users in {loaded.load_seconds:.1f}s",
            flush=True,
        )
        ctx.scratch["org"] = loaded
    return ctx.scratch["org"]


async def publish_profile(
    ctx: BenchContext, pid: str, items: list[dict[str, Any]], users: list[str], timeout: float = 900.0
) -> dict[str, float]:
    """Defines and publishes a profile; returns {api_seconds, seconds} where seconds runs from the
    publish call until publish-service committed every member's bucket set."""
    loaded = await org(ctx)
    async with admin_client(ctx) as admin:
        await fixture.define_profile(admin, pid, items, users)
        conn = await pg(ctx)
        try:
            t0 = time.perf_counter()
            version = await fixture.publish(admin, pid)
            api = time.perf_counter() - t0
            await eventually(
                lambda: fixture.bucket_store_has_profile(conn, pid, version, len(users)),
                timeout=timeout,
                interval=0.02,
                message=f"profile {pid} v{version} in the bucket store",
            )
            seconds = time.perf_counter() - t0
        finally:
            await conn.close()
    loaded.published[pid] = version
    return {"api_seconds": api, "seconds": seconds}


async def main_published(ctx: BenchContext) -> fixture.Loaded:
    loaded = await org(ctx)
    if fixture.MAIN_PROFILE not in loaded.published:
        await publish_profile(ctx, fixture.MAIN_PROFILE, fixture.MAIN_ITEMS, [u["id"] for u in loaded.org.users])
    return loaded


async def side_published(ctx: BenchContext) -> fixture.Loaded:
    loaded = await org(ctx)
    if fixture.SIDE_PROFILE not in loaded.published:
        users = [fixture.side_user(i) for i in range(ctx.sizes.side_users)]
        await publish_profile(ctx, fixture.SIDE_PROFILE, fixture.SIDE_ITEMS, users)
    return loaded


async def bulk_published(ctx: BenchContext) -> fixture.Loaded:
    loaded = await org(ctx)
    if fixture.BULK_PROFILE not in loaded.published:
        await publish_profile(ctx, fixture.BULK_PROFILE, fixture.BULK_ITEMS, [fixture.BULK_USER])
    return loaded


async def ops_present(conn: asyncpg.Connection, keys: list[tuple[str, int]]) -> int:
    """How many of these (record id, version) have an op in the bucket store."""
    return int(
        await conn.fetchval(
            """SELECT count(DISTINCT (o.record_id, o.version)) FROM sync.bucket_ops o
           JOIN unnest($1::text[], $2::bigint[]) k(id, v) ON o.record_id = k.id AND o.version >= k.v""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
    )
