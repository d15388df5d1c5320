"""New buckets filled over helper connections (bucket_writes.materialize with a pool): helpers
commit their ops before the reconcile does, so a reconcile that fails afterwards leaves ops of
buckets that do not exist; nothing reaches them, and the next materialization of the same ids
replaces them with exactly the buckets' content."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from publish_harness import accounts_and_contacts, create_schemas

from offsync_shared import db
from offsync_shared.checksum import op_hash
from offsync_shared.events.admin import ProfileItemSnapshot, ProfilePublished
from offsync_stack.infra import Infra
from publish_service import first_copy, membership

pytestmark = pytest.mark.integration

ITEMS: list[dict[str, Any]] = [
    {"entity": "account", "filter": {"kind": "other", "user": True, "team": False, "business_unit": True}},
    {
        "entity": "contact",
        "filter": {"kind": "related"},
        "relationships": [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}],
    },
]


class Boom(Exception):
    pass


async def _publish(pool: asyncpg.Pool, fail: bool) -> None:
    ev = ProfilePublished(
        profile_id="P", version=1, items=[ProfileItemSnapshot(**i) for i in ITEMS], user_ids=[f"u{i}" for i in range(9)]
    )
    await first_copy.premirror(pool, ["account", "contact"])
    async with pool.acquire() as conn:
        async with conn.transaction():
            await membership.apply_profile_event(conn, ev)
            await membership.reconcile(conn, "n", pool)
            if fail:
                raise Boom


async def _ops(pool: asyncpg.Pool) -> set[tuple[str, str, str, int]]:
    rows = await pool.fetch("SELECT bucket_id, entity, record_id, version FROM sync.bucket_ops WHERE op = 'put'")
    return {(r["bucket_id"], r["entity"], r["record_id"], r["version"]) for r in rows}


async def test_a_failed_reconcile_leaves_unreachable_ops_that_the_next_one_replaces(infra: Infra) -> None:
    pool = await db.create_pool(await infra.create_database("helpers"), max_size=4)
    try:
        await create_schemas(pool)
        await accounts_and_contacts(pool)
        with pytest.raises(Boom):
            await _publish(pool, fail=True)
        leftover = await _ops(pool)
        assert leftover, "the helpers committed their ops"
        assert await pool.fetchval("SELECT count(*) FROM sync.buckets") == 0
        assert await pool.fetchval("SELECT count(*) FROM sync.user_buckets") == 0

        await _publish(pool, fail=False)
        ops = await _ops(pool)
        assert ops == leftover  # the same content, each row once (the leftovers were deleted first)
        assert await pool.fetchval("SELECT count(*) FROM sync.bucket_ops") == len(ops)
        buckets = await pool.fetch("SELECT id, checksum, record_count, last_op_id FROM sync.buckets")
        assert {o[0] for o in ops} <= {b["id"] for b in buckets}  # some buckets are empty
        assert any(b["id"].startswith("contact:") for b in buckets)  # a derived family filled after its parents
        for b in buckets:
            mine = [o for o in ops if o[0] == b["id"]]
            assert b["record_count"] == len(mine)
            assert b["checksum"] == sum(op_hash(e, r, v) for _, e, r, v in mine) % 2**32
            assert b["last_op_id"] == (
                await pool.fetchval("SELECT max(op_id) FROM sync.bucket_ops WHERE bucket_id = $1", b["id"]) or 0
            )
        assert await pool.fetchval("SELECT count(*) FROM sync.user_profiles") == 9
    finally:
        await pool.close()


async def test_a_pool_of_one_connection_fills_in_the_reconcile_itself(infra: Infra) -> None:
    """The reconcile holds the pool's only connection: helpers would wait for it forever."""
    pool = await db.create_pool(await infra.create_database("helpers_one"), max_size=1)
    try:
        await create_schemas(pool)
        await accounts_and_contacts(pool)
        await asyncio.wait_for(_publish(pool, fail=False), timeout=120)
        assert await pool.fetchval("SELECT count(*) FROM sync.user_profiles") == 9
        assert await pool.fetchval("SELECT count(*) FROM sync.bucket_ops") > 0
    finally:
        await pool.close()
