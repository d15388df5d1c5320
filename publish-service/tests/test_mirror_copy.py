"""The first copy of an entity's records into record_index (bucket_writes.mirror_records): a plain insert
of the rows the index lacks, falling back to the upsert when a RecordChanged indexes one of them
concurrently. Either way rows already indexed keep their (newer) state and every row arrives."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from publish_harness import create_schemas

from offsync_shared import db
from offsync_stack.infra import Infra
from offsync_stack.testing import eventually
from publish_service import bucket_writes

pytestmark = pytest.mark.integration


async def _pool(infra: Infra, name: str) -> asyncpg.Pool:
    pool = await db.create_pool(await infra.create_database(name), max_size=3)
    await create_schemas(pool)
    await pool.execute(
        """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
           SELECT 'account', 'a' || i, 1, 'u1', 'user', 'b1', jsonb_build_object('n', i) FROM generate_series(1, 50) i"""
    )
    return pool


async def _index_newer(conn: asyncpg.Connection, rid: str) -> None:
    """What the incremental path does for a RecordChanged newer than data.records' row."""
    await conn.execute(
        """INSERT INTO sync.record_index(entity, record_id, version, owner_id, owner_type, business_unit_id, attributes)
           VALUES ('account', $1, 7, 'u2', 'user', 'b1', '{"n": -1}')""",
        rid,
    )


async def _index(pool: asyncpg.Pool) -> dict[str, int]:
    return {
        r["record_id"]: r["version"]
        for r in await pool.fetch("SELECT record_id, version FROM sync.record_index WHERE entity = 'account'")
    }


async def test_copy_skips_rows_already_indexed(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_skip")
    try:
        async with pool.acquire() as conn:
            await _index_newer(conn, "a3")
            async with conn.transaction():
                assert await bucket_writes.mirror_records(conn, ["account"]) == 49
            assert await bucket_writes.mirror_records(conn, ["account"]) == 0  # once per entity
        index = await _index(pool)
        assert len(index) == 50 and index["a3"] == 7 and index["a4"] == 1
    finally:
        await pool.close()


async def test_copy_racing_an_incremental_insert_falls_back_to_the_upsert(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_race")
    try:
        async with pool.acquire() as racer, pool.acquire() as mirror:
            tx = racer.transaction()
            await tx.start()
            await _index_newer(racer, "a5")  # not committed: the copy's snapshot cannot see it
            copying = asyncio.create_task(_mirror_in_tx(mirror))
            # The plain insert blocks on a5's uncommitted key; once the racer commits it fails
            # with a unique violation and the upsert does the copy.
            await _wait_blocked(pool, mirror)
            await tx.commit()
            assert await copying == 49
        index = await _index(pool)
        assert len(index) == 50 and index["a5"] == 7
    finally:
        await pool.close()


async def _mirror_in_tx(conn: asyncpg.Connection) -> int:
    async with conn.transaction():
        return await bucket_writes.mirror_records(conn, ["account"])


async def _wait_blocked(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    pid = conn.get_server_pid()

    async def waiting_on_lock() -> bool:
        return bool(await pool.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))

    await eventually(waiting_on_lock, timeout=30, message="the copy waits on the racing insert")


async def test_premirror_split_over_page_ranges_copies_every_row_once(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_split")
    try:
        # Enough rows for several heap pages, so that every part has rows to copy.
        await pool.execute(
            """INSERT INTO data.records(entity, id, version, attributes)
               SELECT 'account', 'b' || i, 1, jsonb_build_object('pad', repeat('x', 200)) FROM generate_series(1, 2000) i"""
        )
        pages = await pool.fetchval("SELECT pg_relation_size('data.records') / 8192")
        assert pages >= 6
        async with pool.acquire() as conn:
            await _index_newer(conn, "a3")
        await bucket_writes.premirror(pool, ["account"], parts=3)
        index = await _index(pool)
        assert len(index) == 2050 and index["a3"] == 7 and index["b2000"] == 1
        assert await pool.fetchval("SELECT count(*) FROM sync.mirrored_entities WHERE entity = 'account'") == 1
        await bucket_writes.premirror(pool, ["account"], parts=3)  # once per entity
        assert len(await _index(pool)) == 2050
    finally:
        await pool.close()
