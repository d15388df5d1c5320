"""The outbox insert that also queues hints (``insert_rows(..., notices)``) over a real
PostgreSQL: one statement writes the rows and queues each notice, which a listener hears at the
commit and never for a rolled-back transaction; the rows stay in order for the writer's own send."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from offsync_shared import db, ops_hint, outbox, records_hint
from offsync_shared.outbox import OUTBOX_DDL, Also, OutboxRelay, insert_rows, publish_after_commit
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

CHANNELS = (records_hint.CHANNEL, ops_hint.CHANNEL, "s_outbox")


class Heard:
    def __init__(self) -> None:
        self.items: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def __call__(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self.items.put_nowait((channel, payload))

    async def next(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.items.get(), 10)


@pytest.fixture
async def stack(fresh_env: InfraEnv) -> AsyncIterator[tuple[asyncpg.Pool, Heard]]:
    """A pool on a database with an outbox in schema ``s``, and what a listener on every
    channel hears."""
    pool = await db.create_pool(fresh_env.pg_dsn)
    listener = await db.connect(fresh_env.pg_dsn)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA s; SET search_path TO s;" + OUTBOX_DDL)
        heard = Heard()
        for ch in CHANNELS:
            await listener.add_listener(ch, heard)
        yield pool, heard
    finally:
        await listener.close()
        await pool.close()


async def _marker(pool: asyncpg.Pool) -> None:
    """A committed notice after the case under test: notices arrive in commit order, so whatever
    the case queued is heard before it or never."""
    await pool.execute("SELECT pg_notify($1, 'marker')", ops_hint.CHANNEL)


async def test_rows_and_hints_in_one_statement_heard_at_the_commit_in_order(stack: tuple[asyncpg.Pool, Heard]) -> None:
    pool, heard = stack
    relay = OutboxRelay(pool, "s", publisher=None)  # type: ignore[arg-type]  # never sends here
    messages = [("t", f"k{i}", f"v{i}".encode()) for i in range(5)]
    async with publish_after_commit(relay), pool.acquire() as conn:
        async with conn.transaction():
            await insert_rows(
                conn,
                "s",
                messages,
                [records_hint.notice([("account", "a1")]), ops_hint.notice({"b": 7}), ops_hint.notice({})],
            )
            pending = outbox._AFTER_COMMIT.get()
            assert pending is not None
            ids = list(pending.ids)
        relay_rows = await conn.fetch("SELECT id, key FROM s.outbox ORDER BY id")
        pending.ids.clear()  # the test's relay has no producer: nothing to send afterwards
    assert [r["id"] for r in relay_rows] == ids
    assert [r["key"] for r in relay_rows] == [k for _, k, _ in messages]
    # The writer sends its rows itself: no wake-up for the relay; an empty hint is not sent.
    assert await heard.next() == (records_hint.CHANNEL, '[["account","a1"]]')
    assert await heard.next() == (ops_hint.CHANNEL, '{"b":7}')
    await _marker(pool)
    assert await heard.next() == (ops_hint.CHANNEL, "marker")


async def test_without_the_writers_send_the_relay_is_woken_and_a_rollback_sends_nothing(
    stack: tuple[asyncpg.Pool, Heard],
) -> None:
    pool, heard = stack
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await insert_rows(conn, "s", [("t", "gone", b"x")], [records_hint.notice([("account", "gone")])])
            raise RuntimeError("rolled back")
    async with pool.acquire() as conn, conn.transaction():
        await insert_rows(conn, "s", [("t", "kept", b"x")], [records_hint.notice([("account", "kept")])])
    got = {await heard.next(), await heard.next()}
    assert got == {(records_hint.CHANNEL, '[["account","kept"]]'), ("s_outbox", "")}
    await _marker(pool)
    assert await heard.next() == (ops_hint.CHANNEL, "marker")
    assert [r["key"] for r in await pool.fetch("SELECT key FROM s.outbox")] == ["kept"]


async def test_a_hint_without_rows_is_still_sent_and_nothing_at_all_is_no_statement(
    stack: tuple[asyncpg.Pool, Heard],
) -> None:
    pool, heard = stack
    async with pool.acquire() as conn, conn.transaction():
        await insert_rows(conn, "s", [], [ops_hint.notice({"b": 1})])
        await insert_rows(conn, "s", [], [ops_hint.notice({})])  # nothing to queue
    assert await heard.next() == (ops_hint.CHANNEL, '{"b":1}')
    await _marker(pool)
    assert await heard.next() == (ops_hint.CHANNEL, "marker")
    assert await pool.fetchval("SELECT count(*) FROM s.outbox") == 0


async def test_another_write_runs_in_the_same_statement_with_its_own_parameters(
    stack: tuple[asyncpg.Pool, Heard],
) -> None:
    pool, heard = stack
    await pool.execute("CREATE TABLE s.other (k text, v int)")

    def other(first: int) -> str:
        return f"INSERT INTO s.other SELECT * FROM unnest(${first}::text[], ${first + 1}::int[])"

    also = [Also(other, [["x", "y"], [1, 2]])]
    async with pool.acquire() as conn, conn.transaction():
        await insert_rows(conn, "s", [("t", "k", b"v")], [ops_hint.notice({"b": 2})], also)
        await insert_rows(conn, "s", [], [], [Also(other, [["z"], [3]])])  # the other write alone
    assert await heard.next() in {(ops_hint.CHANNEL, '{"b":2}'), ("s_outbox", "")}
    rows = await pool.fetch("SELECT k, v FROM s.other ORDER BY k")
    assert [(r["k"], r["v"]) for r in rows] == [("x", 1), ("y", 2), ("z", 3)]
    assert await pool.fetchval("SELECT count(*) FROM s.outbox") == 1


async def test_a_write_returns_its_rows_and_the_transaction_time_comes_back(
    stack: tuple[asyncpg.Pool, Heard],
) -> None:
    pool, _ = stack
    await pool.execute("CREATE TABLE s.kept (k text PRIMARY KEY, v int)")
    upsert = outbox.statement(
        "INSERT INTO s.kept SELECT * FROM unnest($1::text[], $2::int[]) RETURNING k || '=' || v",
        [["a", "b"], [1, 2]],
        returns=True,
    )
    quiet = outbox.statement("UPDATE s.kept SET v = v + $1 WHERE k = $2", [10, "a"])
    async with pool.acquire() as conn, conn.transaction():
        began = await conn.fetchval("SELECT now()")
        done = await insert_rows(conn, "s", [], [], [upsert, quiet])
        assert done is not None and done.now == began
        assert sorted(map(str, done.returned[0])) == ["a=1", "b=2"]
        assert await insert_rows(conn, "s", [], []) is None  # nothing to do: no statement
        idle = await insert_rows(conn, "s", [], [], always=True)
        assert idle is not None and idle.now == began and idle.returned == []
    # One statement, one snapshot: the update did not see the row inserted beside it. Writes
    # joined this way must touch different tables.
    assert await pool.fetchval("SELECT v FROM s.kept WHERE k = 'a'") == 1
