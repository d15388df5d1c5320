"""Migration 005 on a database from before it: record_index, a plain table, becomes the partition
of the entities it holds, with its rows and indexes as they were; entities copied afterwards get
partitions of their own."""

from __future__ import annotations

import asyncpg
import pytest

from offsync_shared import db
from offsync_stack.infra import Infra
from publish_service import first_copy

pytestmark = pytest.mark.integration

_UPGRADE = "005_record_index_partitions.sql"


async def _before_partitions(pool: asyncpg.Pool) -> None:
    """The admin, data and sync schemas as a deployment from before migration 005 has them."""
    await db.migrate(pool, "admin", "profile_service.migrations")
    await db.migrate(pool, "data", "conflict_service.migrations")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE SCHEMA sync; SET LOCAL search_path TO sync, public")
        await conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for name, sql in db._migration_files("publish_service.migrations"):
            if name >= _UPGRADE:
                break
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations(name) VALUES ($1)", name)


async def test_an_existing_index_becomes_the_partition_of_its_entities(infra: Infra) -> None:
    pool = await db.create_pool(await infra.create_database("upgrade_index"), max_size=3)
    try:
        await _before_partitions(pool)
        await pool.execute(
            """INSERT INTO sync.record_index(entity, record_id, version, attributes)
               SELECT 'contact', 'c' || i, 1, jsonb_build_object('parent', 'a1') FROM generate_series(1, 20) i"""
        )
        await pool.execute("INSERT INTO sync.mirrored_entities VALUES ('contact'), ('account')")
        await pool.execute(
            """INSERT INTO data.records(entity, id, version, attributes)
               SELECT 'task', 't' || i, 1, '{}' FROM generate_series(1, 10) i"""
        )
        # A link index as rules.buckets.link_indexes names and writes it.
        name = "record_index_link_0123456789abcdef"
        ddl = f"CREATE INDEX IF NOT EXISTS {name} ON sync.record_index ((attributes ->> 'parent')) WHERE entity = 'contact'"
        await pool.execute(ddl)

        assert await db.migrate(pool, "sync", "publish_service.migrations") == [_UPGRADE]
        held = {r["entity"]: r["partition"] for r in await pool.fetch("SELECT * FROM sync.record_index_partitions")}
        assert held == {"account": "record_index_legacy", "contact": "record_index_legacy"}
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index WHERE entity = 'contact'") == 20
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index_legacy") == 20

        # The link index of the old table is attached, not built again, when the parent gets it.
        await pool.execute(ddl)
        children = await pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
            f"sync.{name}",
        )
        assert "legacy_" + name.removeprefix("record_index_") in {r["relname"] for r in children}
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = 'sync' AND tablename = 'record_index_legacy'"
            )
            == 2
        )  # its key and the link index: none built twice

        # A new entity is copied into a partition of its own; one the old table holds, the old way.
        await first_copy.premirror(pool, ["task", "contact"])
        assert await pool.fetchval(
            "SELECT DISTINCT tableoid::regclass::text FROM sync.record_index WHERE entity = 'task'"
        ) == "sync." + first_copy.partition_name("task")
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index WHERE entity = 'task'") == 10
    finally:
        await pool.close()


async def test_an_empty_index_is_replaced(infra: Infra) -> None:
    pool = await db.create_pool(await infra.create_database("upgrade_empty"), max_size=2)
    try:
        await _before_partitions(pool)
        assert await db.migrate(pool, "sync", "publish_service.migrations") == [_UPGRADE]
        assert await pool.fetchval("SELECT to_regclass('sync.record_index_legacy')") is None
        assert await pool.fetchval("SELECT count(*) FROM sync.record_index_partitions") == 0
    finally:
        await pool.close()
