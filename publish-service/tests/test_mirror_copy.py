"""The first copy of an entity's records into record_index (publish_service.first_copy): a new
partition of its own, into which rows RecordChanged indexed before move; or, for an entity that
has a partition already, a plain insert of the rows the index lacks, falling back to the upsert
when a RecordChanged indexes one of them concurrently. Either way rows already indexed keep their
(newer) state and every row arrives once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from publish_harness import create_schemas

from offsync_shared import db
from offsync_stack.infra import Infra
from offsync_stack.testing import eventually
from publish_service import first_copy

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
                assert await first_copy.mirror_records(conn, ["account"]) == 49
            assert await first_copy.mirror_records(conn, ["account"]) == 0  # once per entity
        index = await _index(pool)
        assert len(index) == 50 and index["a3"] == 7 and index["a4"] == 1
    finally:
        await pool.close()


async def _partition_of(pool: asyncpg.Pool, entity: str) -> str:
    """Where the entity's rows are stored."""
    return str(
        await pool.fetchval("SELECT DISTINCT tableoid::regclass::text FROM sync.record_index WHERE entity = $1", entity)
    )


async def _forget_copy(pool: asyncpg.Pool) -> None:
    """The account rows and their mirrored mark gone, the partition kept: the next copy of
    accounts is the old way's."""
    await pool.execute("DELETE FROM sync.record_index WHERE entity = 'account'")
    await pool.execute("TRUNCATE sync.mirrored_entities")


async def test_first_copy_fills_a_partition_of_its_own(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_partition")
    try:
        async with pool.acquire() as conn:
            await _index_newer(conn, "a3")
        assert await _partition_of(pool, "account") == "sync.record_index_rest"
        await first_copy.premirror(pool, ["account"])
        own = "sync." + first_copy.partition_name("account")
        assert await _partition_of(pool, "account") == own
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index_rest") == 0
        assert await pool.fetchval("SELECT partition FROM sync.record_index_partitions WHERE entity = 'account'") == (
            first_copy.partition_name("account")
        )
        index = await _index(pool)
        assert len(index) == 50 and index["a3"] == 7 and index["a4"] == 1
        # Later changes land there too.
        await pool.execute("UPDATE sync.record_index SET version = 8 WHERE entity = 'account' AND record_id = 'a3'")
        await pool.execute(
            "INSERT INTO sync.record_index(entity, record_id, version, attributes) VALUES ('account', 'new', 1, '{}')"
        )
        assert await _partition_of(pool, "account") == own
    finally:
        await pool.close()


async def test_a_new_partition_gets_the_indexes_of_the_others(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_indexes")
    try:
        await pool.execute(
            "CREATE INDEX record_index_link_test ON sync.record_index ((attributes ->> 'n')) WHERE entity = 'account'"
        )
        await first_copy.premirror(pool, ["account"])
        # Built before the attach, which then only attached it under the parent's index.
        attached = await pool.fetchval(
            """SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'sync.record_index_link_test'::regclass
                 AND c.relname LIKE $1""",
            first_copy.partition_name("account") + "%",
        )
        assert attached == 1
    finally:
        await pool.close()


async def test_two_copies_of_one_entity_at_once_copy_it_once(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_twice")
    try:
        # The second waits on the first's new table, then finds the entity copied.
        await asyncio.gather(first_copy.premirror(pool, ["account"]), first_copy.premirror(pool, ["account"]))
        assert len(await _index(pool)) == 50
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index WHERE entity = 'account'") == 50
        assert await _partition_of(pool, "account") == "sync." + first_copy.partition_name("account")
    finally:
        await pool.close()


async def test_new_partition_copy_racing_an_incremental_insert_keeps_the_insert(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_race_new")
    try:
        async with pool.acquire() as racer, pool.acquire() as mirror:
            tx = racer.transaction()
            await tx.start()
            await _index_newer(racer, "a5")  # not committed: the copy's snapshot cannot see it
            copying = asyncio.create_task(_mirror_in_tx(mirror))
            # The copy waits for the default partition, where the racer's row is; once the racer
            # commits, the row moves into the new partition over the copied one.
            await _wait_blocked(pool, mirror)
            await tx.commit()
            assert await copying == 49
        index = await _index(pool)
        assert len(index) == 50 and index["a5"] == 7
    finally:
        await pool.close()


async def test_copy_racing_an_incremental_insert_falls_back_to_the_upsert(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_race")
    try:
        await first_copy.premirror(pool, ["account"])
        await _forget_copy(pool)
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
        return await first_copy.mirror_records(conn, ["account"])


async def _wait_blocked(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    pid = conn.get_server_pid()

    async def waiting_on_lock() -> bool:
        return bool(await pool.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid))

    await eventually(waiting_on_lock, timeout=30, message="the copy waits on the racing insert")


async def test_premirror_split_over_page_ranges_copies_every_row_once(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_split")
    try:
        await first_copy.premirror(pool, ["account"])
        await _forget_copy(pool)  # the page ranges are the old way's
        # Enough rows for several heap pages, so that every part has rows to copy.
        await pool.execute(
            """INSERT INTO data.records(entity, id, version, attributes)
               SELECT 'account', 'b' || i, 1, jsonb_build_object('pad', repeat('x', 200)) FROM generate_series(1, 2000) i"""
        )
        pages = await pool.fetchval("SELECT pg_relation_size('data.records') / 8192")
        assert pages >= 6
        async with pool.acquire() as conn:
            await _index_newer(conn, "a3")
        await first_copy.premirror(pool, ["account"], parts=3)
        index = await _index(pool)
        assert len(index) == 2050 and index["a3"] == 7 and index["b2000"] == 1
        assert await pool.fetchval("SELECT count(*) FROM sync.mirrored_entities WHERE entity = 'account'") == 1
        await first_copy.premirror(pool, ["account"], parts=3)  # once per entity
        assert len(await _index(pool)) == 2050
    finally:
        await pool.close()
