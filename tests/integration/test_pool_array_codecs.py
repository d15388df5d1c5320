"""A pooled connection knows the array types our statements use from the moment it opens
(offsync_shared.db): no catalog lookup lands in the first change it carries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from offsync_shared import db
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

STATEMENT = """SELECT $1::bigint[] AS a, $2::int[] AS b, $3::bool[] AS c, $4::bytea[] AS d,
                      $5::timestamptz[] AS e, $6::jsonb[] AS f, $7::text[] AS g"""
ARGS: tuple[list[Any], ...] = ([1], [2], [True], [b"x"], [])


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


async def test_a_pooled_connection_has_learned_them_when_it_opened(pool_of_one: asyncpg.Pool) -> None:
    async with pool_of_one.acquire() as conn:
        assert await _lookups(conn, {"k": 1}) == []  # jsonb elements through the pool's codec


def test_every_array_type_the_services_bind_is_learned_up_front() -> None:
    """A new ``::T[]`` in a service's SQL must join db._ARRAY_TYPES, or its first use on each
    connection pays the catalog lookup again."""
    root = Path(__file__).resolve().parents[2]
    packages = [
        "shared/offsync_shared",
        *(f"{s}-service/{s}_service" for s in ("profile", "publish", "sync", "conflict")),
    ]
    casts = {
        cast
        for package in packages
        for path in (root / package).rglob("*.py")
        for cast in re.findall(r"::([a-z0-9_]+)\[\]", path.read_text())
    }
    assert casts, "no array casts found: the scan is looking in the wrong place"
    assert casts - {"text"} <= set(db._ARRAY_TYPES), casts
