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
from publish_service import bucket_writes, worker

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


async def test_a_connection_that_died_inside_the_block_raises_an_error_the_worker_waits_out(
    pool: asyncpg.Pool,
) -> None:
    """The ROLLBACK after a failure is best effort: on a connection the server ended (a restart,
    an administrator's terminate) it cannot run. The error that ended the block reaches the
    caller, and it must be one the worker retries (``worker.TRANSIENT``): asyncpg raises
    ``InternalClientError`` for a statement on a session the server has just terminated. The
    workers did not count it as the database being away: a poll failing with it went to the
    one-event-at-a-time fallback, and an event failing the same way there went to the dead
    letters. The lock went with the server's session."""
    async with pool.acquire() as conn:
        pid = conn.get_server_pid()
        with pytest.raises(Exception) as raised:
            async with bucket_writes.ops_transaction(conn):
                await conn.execute("INSERT INTO t VALUES (1)")
                assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
                await conn.execute("INSERT INTO t VALUES (2)")
    assert isinstance(raised.value, worker.TRANSIENT), repr(raised.value)
    assert await pool.fetchval("SELECT count(*) FROM t") == 0
    assert await _other_gets_the_lock(pool)
