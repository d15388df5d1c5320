"""The first copy of an entity's records into record_index (publish_service.first_copy). The insert
way: a plain insert of the rows the index lacks, falling back to the upsert when a RecordChanged
indexes one of them concurrently. The rebuild way (an index small beside the copy, known from the
planner's statistics): a new table that replaces record_index, with the old table's rows and
indexes. Either way rows already indexed keep their (newer) state and every row arrives once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from publish_harness import create_schemas

from offsync_shared import db
from offsync_stack.infra import Infra
from offsync_stack.testing import eventually
from publish_service import first_copy
from publish_service.rules.buckets import BucketDef, link_indexes, make_bucket

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    """A fresh database holding 50 account records, none indexed yet."""
    pool = await db.create_pool(await infra.create_database("mirror"), max_size=3)
    try:
        await create_schemas(pool)
        await pool.execute(
            """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
               SELECT 'account', 'a' || i, 1, 'u1', 'user', 'b1', jsonb_build_object('n', i) FROM generate_series(1, 50) i"""
        )
        yield pool
    finally:
        await pool.close()


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


async def test_copy_skips_rows_already_indexed(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await _index_newer(conn, "a3")
        async with conn.transaction():
            assert await first_copy.mirror_records(conn, ["account"]) == 49
        assert await first_copy.mirror_records(conn, ["account"]) == 0  # once per entity
    index = await _index(pool)
    assert len(index) == 50 and index["a3"] == 7 and index["a4"] == 1


async def test_copy_racing_an_incremental_insert_falls_back_to_the_upsert(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as racer, pool.acquire() as mirror:
        tx = racer.transaction()
        await tx.start()
        await _index_newer(racer, "a5")  # not committed: the copy's snapshot cannot see it
        copying = asyncio.create_task(_mirror_in_tx(mirror))
        # The plain insert blocks on a5's uncommitted key; once the racer commits it fails
        # with a unique violation and the upsert does the copy.
        await _wait_for_a_lock(pool)
        await tx.commit()
        assert await copying == 49
    index = await _index(pool)
    assert len(index) == 50 and index["a5"] == 7


async def _mirror_in_tx(conn: asyncpg.Connection) -> int:
    async with conn.transaction():
        return await first_copy.mirror_records(conn, ["account"])


async def _wait_for_a_lock(pool: asyncpg.Pool) -> None:
    """Until a session of this database waits on a lock: the copy, on the racing transaction."""

    async def someone_waits() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )

    await eventually(someone_waits, timeout=30, message="the copy waits on the racing transaction")


async def test_premirror_split_over_page_ranges_copies_every_row_once(pool: asyncpg.Pool) -> None:
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


async def _index_names(pool: asyncpg.Pool) -> set[str]:
    return {
        r["indexname"]
        for r in await pool.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'sync' AND tablename = 'record_index'"
        )
    }


async def _records_analyzed(pool: asyncpg.Pool) -> None:
    """The planner's statistics, from which the copy knows how many rows it brings."""
    await pool.execute("ANALYZE data.records")


async def test_rebuild_replaces_the_index_with_its_rows_indexes_and_readers(pool: asyncpg.Pool) -> None:
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
    assert await _index_names(pool) == {"record_index_pkey", "record_index_link_test"}
    assert await pool.fetchval("SELECT to_regclass($1)", first_copy.NEXT) is None
    assert await pool.fetchval("SELECT count(*) FROM sync.mirrored_entities WHERE entity = 'account'") == 1
    # The key still refuses a duplicate: the primary key came over.
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute("INSERT INTO sync.record_index(entity, record_id, version) VALUES ('account', 'a1', 9)")


async def test_a_rebuild_builds_the_link_indexes_the_publish_wants(pool: asyncpg.Pool) -> None:
    (name, ddl), *_ = link_indexes([_contact_of_account()]).items()
    await _records_analyzed(pool)
    await first_copy.premirror(pool, ["account"], indexes={name: ddl})
    assert await _index_names(pool) == {"record_index_pkey", name}
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = ('sync.' || $1)::regclass"
    assert await pool.fetchval(valid, name)
    await pool.execute(ddl)  # the publish's own statement then has nothing to do
    # The insert way leaves them to the publish.
    await pool.execute("INSERT INTO data.records(entity, id, version, attributes) VALUES ('task', 't1', 1, '{}')")
    await first_copy.premirror(pool, ["task"], indexes={"record_index_link_never": ddl})
    assert await _index_names(pool) == {"record_index_pkey", name}


def _contact_of_account() -> BucketDef:
    return make_bucket("contact", {"k": "rel", "from": "account", "attribute": "parent", "side": "self"}, "org", {})


async def test_rebuild_is_not_chosen_for_a_large_index(pool: asyncpg.Pool) -> None:
    await _records_analyzed(pool)
    async with pool.acquire() as conn:
        assert await first_copy.rebuild_pays(conn, ["account"])
        assert not await first_copy.rebuild_pays(conn, ["nothing"])  # no rows to bring
        await conn.execute(
            """INSERT INTO sync.record_index(entity, record_id, version)
               SELECT 'task', 't' || i, 1 FROM generate_series(1, 60) i"""
        )
        assert not await first_copy.rebuild_pays(conn, ["account"])  # the index holds more than the copy brings


async def _rebuild_racing(pool: asyncpg.Pool, racing: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    """A rebuild of accounts while another transaction has done ``racing`` and not committed:
    the rebuild's snapshot cannot see it, and its swap waits for the table until it commits."""
    await _records_analyzed(pool)
    async with pool.acquire() as racer:
        tx = racer.transaction()
        await tx.start()
        await racing(racer)
        copying = asyncio.create_task(first_copy.premirror(pool, ["account"]))
        await _wait_for_a_lock(pool)
        await tx.commit()
        await copying


async def test_rebuild_racing_an_incremental_insert_keeps_the_insert(pool: asyncpg.Pool) -> None:
    await _rebuild_racing(pool, lambda racer: _index_newer(racer, "a5"))
    index = await _index(pool)
    assert len(index) == 50 and index["a5"] == 7


async def test_an_index_made_during_a_rebuild_is_on_the_new_table(pool: asyncpg.Pool) -> None:
    async def late_index(other: asyncpg.Connection) -> None:
        # Not committed when the rebuild reads record_index's indexes; committed before its swap.
        await other.execute("CREATE INDEX record_index_link_late ON sync.record_index ((attributes ->> 'n'))")
        await _index_newer(other, "a5")

    await _rebuild_racing(pool, late_index)
    assert await _index_names(pool) == {"record_index_pkey", "record_index_link_late"}
    assert len(await _index(pool)) == 50


async def test_two_first_copies_at_once_copy_once(pool: asyncpg.Pool) -> None:
    await _records_analyzed(pool)
    await asyncio.gather(first_copy.premirror(pool, ["account"]), first_copy.premirror(pool, ["account"]))
    assert len(await _index(pool)) == 50
    assert await pool.fetchval("SELECT count(*) FROM sync.record_index") == 50


async def test_a_rebuild_that_died_half_way_is_cleared(pool: asyncpg.Pool) -> None:
    await _records_analyzed(pool)
    await pool.execute(f"CREATE TABLE {first_copy.NEXT} (LIKE sync.record_index INCLUDING DEFAULTS)")
    await pool.execute(f"INSERT INTO {first_copy.NEXT}(entity, record_id, version) VALUES ('account', 'stale', 1)")
    await first_copy.premirror(pool, ["account"])
    index = await _index(pool)
    assert len(index) == 50 and "stale" not in index


async def test_a_pool_of_one_connection_copies_too(infra: Infra) -> None:
    one = await db.create_pool(await infra.create_database("mirror_one"), max_size=1)
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
