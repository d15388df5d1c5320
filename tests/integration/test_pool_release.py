"""A pooled connection goes back to the pool without a round trip (offsync_shared.db.keep_session):
asyncpg's default reset query is not sent, and what a release must still do is done."""

from __future__ import annotations

import asyncpg
import pytest

pytestmark = pytest.mark.integration


async def test_release_sends_no_reset_query(pool_of_one: asyncpg.Pool) -> None:
    sent: list[str] = []
    async with pool_of_one.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
        await conn.fetchval("SELECT 1")
    async with pool_of_one.acquire() as conn:
        assert await conn.fetchval("SELECT 2") == 2
    assert sent == ["SELECT 1", "SELECT 2"]  # nothing between the two: no RESET ALL, no UNLISTEN


async def test_a_transaction_left_open_is_still_rolled_back(pool_of_one: asyncpg.Pool) -> None:
    async with pool_of_one.acquire() as conn:
        await conn.execute("CREATE TABLE t (n int)")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO t VALUES (1)")
    async with pool_of_one.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM t") == 0


async def test_a_listener_that_removes_itself_leaves_nothing_listening(pool_of_one: asyncpg.Pool) -> None:
    """As the outbox relay does with its pooled connection when it stops."""

    def on_notify(*_: object) -> None:
        pass

    async with pool_of_one.acquire() as conn:
        await conn.add_listener("outbox", on_notify)
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 1
        await conn.remove_listener("outbox", on_notify)
    async with pool_of_one.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
