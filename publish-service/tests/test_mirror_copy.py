"""The first copy of an entity's records into record_index (publish_service.first_copy). The insert
way: a plain insert of the rows the index lacks, falling back to the upsert when a RecordChanged
indexes one of them concurrently. The rebuild way (an index small beside the copy, known from the
planner's statistics): a new table that replaces record_index, with the old table's rows and
indexes. Either way rows already indexed keep their (newer) state and every row arrives once."""

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
        return await first_copy.mirror_records(conn, ["account"])


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
        await first_copy.premirror(pool, ["account"], parts=3)
        index = await _index(pool)
        assert len(index) == 2050 and index["a3"] == 7 and index["b2000"] == 1
        assert await pool.fetchval("SELECT count(*) FROM sync.mirrored_entities WHERE entity = 'account'") == 1
        await first_copy.premirror(pool, ["account"], parts=3)  # once per entity
        assert len(await _index(pool)) == 2050
    finally:
        await pool.close()


async def _records_analyzed(pool: asyncpg.Pool) -> None:
    """The planner's statistics, from which the copy knows how many rows it brings."""
    await pool.execute("ANALYZE data.records")


async def test_rebuild_replaces_the_index_with_its_rows_indexes_and_readers(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_rebuild")
    try:
        await pool.execute(
            "CREATE INDEX record_index_link_test ON sync.record_index ((attributes ->> 'n')) WHERE entity = 'account'"
        )
        async with pool.acquire() as conn:
            await _index_newer(conn, "a3")
            await conn.execute(
                "INSERT INTO sync.record_index(entity, record_id, version, attributes) VALUES ('task', 't1', 4, '{}')"
            )
        await _records_analyzed(pool)
        async with pool.acquire() as reader:
            read = await reader.prepare("SELECT version FROM sync.record_index WHERE entity = $1 AND record_id = $2")
            assert await read.fetchval("account", "a3") == 7
            before = await pool.fetchval("SELECT 'sync.record_index'::regclass::oid")
            assert await first_copy.rebuild_pays(reader, ["account"])
            await first_copy.premirror(pool, ["account"])
            assert await pool.fetchval("SELECT 'sync.record_index'::regclass::oid") != before  # a new table
            # A statement prepared on the old table reads the new one.
            assert await read.fetchval("account", "a3") == 7
            assert await read.fetchval("account", "a4") == 1
        index = await _index(pool)
        assert len(index) == 50 and index["a3"] == 7
        assert await pool.fetchval("SELECT version FROM sync.record_index WHERE record_id = 't1'") == 4
        names = {
            r["indexname"]
            for r in await pool.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'sync' AND tablename = 'record_index'"
            )
        }
        assert names == {"record_index_pkey", "record_index_link_test"}
        assert await pool.fetchval("SELECT to_regclass($1)", first_copy.NEXT) is None
        assert await pool.fetchval("SELECT count(*) FROM sync.mirrored_entities WHERE entity = 'account'") == 1
        # The key still refuses a duplicate: the primary key came over.
        with pytest.raises(asyncpg.UniqueViolationError):
            await pool.execute("INSERT INTO sync.record_index(entity, record_id, version) VALUES ('account', 'a1', 9)")
    finally:
        await pool.close()


async def test_rebuild_is_not_chosen_for_a_large_index(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_large")
    try:
        await _records_analyzed(pool)
        async with pool.acquire() as conn:
            assert await first_copy.rebuild_pays(conn, ["account"])
            assert not await first_copy.rebuild_pays(conn, ["nothing"])  # no rows to bring
            await conn.execute(
                """INSERT INTO sync.record_index(entity, record_id, version)
                   SELECT 'task', 't' || i, 1 FROM generate_series(1, 60) i"""
            )
            assert not await first_copy.rebuild_pays(conn, ["account"])  # the index holds more than the copy brings
    finally:
        await pool.close()


async def test_rebuild_racing_an_incremental_insert_keeps_the_insert(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_rebuild_race")
    try:
        await _records_analyzed(pool)
        async with pool.acquire() as racer:
            tx = racer.transaction()
            await tx.start()
            await _index_newer(racer, "a5")  # not committed: the copy's snapshot cannot see it
            copying = asyncio.create_task(first_copy.premirror(pool, ["account"]))
            # The swap waits for the table; once the racer commits its row comes over.
            await _wait_for_lock(pool, "Lock")
            await tx.commit()
            await copying
        index = await _index(pool)
        assert len(index) == 50 and index["a5"] == 7
    finally:
        await pool.close()


async def test_an_index_made_during_a_rebuild_is_on_the_new_table(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_rebuild_index")
    try:
        await _records_analyzed(pool)
        async with pool.acquire() as other:
            tx = other.transaction()
            await tx.start()
            # Not committed when the rebuild reads record_index's indexes; committed before its swap.
            await other.execute("CREATE INDEX record_index_link_late ON sync.record_index ((attributes ->> 'n'))")
            await _index_newer(other, "a5")
            copying = asyncio.create_task(first_copy.premirror(pool, ["account"]))
            await _wait_for_lock(pool, "Lock")
            await tx.commit()
            await copying
        names = {
            r["indexname"]
            for r in await pool.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = 'sync' AND tablename = 'record_index'"
            )
        }
        assert names == {"record_index_pkey", "record_index_link_late"}
        assert len(await _index(pool)) == 50
    finally:
        await pool.close()


async def test_two_first_copies_at_once_copy_once(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_twice")
    try:
        await _records_analyzed(pool)
        await asyncio.gather(first_copy.premirror(pool, ["account"]), first_copy.premirror(pool, ["account"]))
        assert len(await _index(pool)) == 50
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index") == 50
    finally:
        await pool.close()


async def test_a_rebuild_that_died_half_way_is_cleared(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_leftover")
    try:
        await _records_analyzed(pool)
        await pool.execute(f"CREATE TABLE {first_copy.NEXT} (LIKE sync.record_index INCLUDING DEFAULTS)")
        await pool.execute(f"INSERT INTO {first_copy.NEXT}(entity, record_id, version) VALUES ('account', 'stale', 1)")
        await first_copy.premirror(pool, ["account"])
        index = await _index(pool)
        assert len(index) == 50 and "stale" not in index
    finally:
        await pool.close()


async def test_a_pool_of_one_connection_copies_too(infra: Infra) -> None:
    pool = await _pool(infra, "mirror_one")
    one = await db.create_pool(await infra.create_database("mirror_one_b"), max_size=1)
    try:
        await create_schemas(one)
        await one.execute(
            """INSERT INTO data.records(entity, id, version, attributes)
               SELECT 'account', 'a' || i, 1, '{}' FROM generate_series(1, 30) i"""
        )
        await one.execute("ANALYZE data.records")
        await first_copy.premirror(one, ["account"], parts=2)  # rebuild
        assert await one.fetchval("SELECT count(*) FROM sync.record_index") == 30
        await one.execute("INSERT INTO data.records(entity, id, version, attributes) VALUES ('task', 't1', 1, '{}')")
        await first_copy.premirror(one, ["task"], parts=2)  # insert (no statistics for tasks)
        assert await one.fetchval("SELECT count(*) FROM sync.record_index") == 31
    finally:
        await one.close()
        await pool.close()


async def _wait_for_lock(pool: asyncpg.Pool, kind: str) -> None:
    async def someone_waits() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = $1 AND datname = current_database()",
                kind,
            )
        )

    await eventually(someone_waits, timeout=30, message="the rebuild waits for the racing insert")
