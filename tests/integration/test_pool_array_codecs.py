"""A pooled connection knows the array types our statements use from the moment it opens
(offsync_shared.db): no catalog lookup lands in the first change it carries."""

from __future__ import annotations

import asyncpg
import pytest

from offsync_shared import db
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

STATEMENT = """SELECT $1::bigint[] AS a, $2::int[] AS b, $3::bool[] AS c, $4::bytea[] AS d,
                      $5::timestamptz[] AS e, $6::jsonb[] AS f, $7::text[] AS g"""
ARGS = ([1], [2], [True], [b"x"], [])


async def _lookups(conn: asyncpg.Connection, document: object) -> list[str]:
    sent: list[str] = []
    conn.add_query_logger(lambda record: sent.append(record.query))
    row = await conn.fetchrow(STATEMENT, *ARGS, [document], ["t"])
    assert row is not None and row["f"] == [document]
    return [q for q in sent if "typeinfo" in q]


async def test_a_bare_connection_looks_the_types_up_on_first_use(fresh_env: InfraEnv) -> None:
    conn = await asyncpg.connect(fresh_env.pg_dsn)
    try:
        assert await _lookups(conn, '{"k": 1}')  # what the pool spares its connections' first statements
    finally:
        await conn.close()


async def test_a_pooled_connection_has_learned_them_when_it_opened(fresh_env: InfraEnv) -> None:
    pool = await db.create_pool(fresh_env.pg_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await _lookups(conn, {"k": 1}) == []  # jsonb elements through the pool's codec
    finally:
        await pool.close()
