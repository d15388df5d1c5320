"""bucket_writes.ops_transaction over a real PostgreSQL: BEGIN and the ops lock in one round
trip; the lock is held for the whole transaction, which commits when the block ends and rolls
back when it raises or its task is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from offsync_shared import db
from offsync_stack.testing import InfraEnv
from publish_service import bucket_writes

pytestmark = pytest.mark.integration

TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('sync:ops'))"


async def _other_gets_the_lock(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as other, other.transaction():
        return bool(await other.fetchval(TRY_LOCK))


@pytest.fixture
async def pool(fresh_env: InfraEnv) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh database with one table ``t`` to write in."""
    p = await db.create_pool(fresh_env.pg_dsn, min_size=2)
    try:
        await p.execute("CREATE TABLE t (v int)")
        yield p
    finally:
        await p.close()


async def test_commits_with_the_lock_held_throughout(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        async with bucket_writes.ops_transaction(conn):
            assert conn.is_in_transaction()
            await conn.execute("INSERT INTO t VALUES (1)")
            assert not await _other_gets_the_lock(pool)
        assert not conn.is_in_transaction()
    assert await pool.fetchval("SELECT count(*) FROM t") == 1
    assert await _other_gets_the_lock(pool)


async def test_rolls_back_and_releases_the_lock_when_the_block_raises(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with bucket_writes.ops_transaction(conn):
                await conn.execute("INSERT INTO t VALUES (1)")
                raise RuntimeError("apply failed")
        assert not conn.is_in_transaction()
        with pytest.raises(asyncpg.UndefinedTableError):  # a failed statement: rolled back too
            async with bucket_writes.ops_transaction(conn):
                await conn.execute("SELECT * FROM missing")
        assert not conn.is_in_transaction()
    assert await pool.fetchval("SELECT count(*) FROM t") == 0
    assert await _other_gets_the_lock(pool)


async def test_a_cancelled_block_leaves_no_transaction_and_no_lock(pool: asyncpg.Pool) -> None:
    entered = asyncio.Event()

    async def slow() -> None:
        async with pool.acquire() as conn, bucket_writes.ops_transaction(conn):
            entered.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await asyncio.wait_for(entered.wait(), 10)
    assert not await _other_gets_the_lock(pool)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _other_gets_the_lock(pool)
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
