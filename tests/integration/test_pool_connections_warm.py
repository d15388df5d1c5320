"""A pooled connection is ready when the pool hands it out: asyncpg's lookup of the array types our
statements bind (a recursive catalog query, ~10 ms on a fresh backend) runs when the connection
is made (offsync_shared.db.WARM_TYPES), not inside the first request or event that uses it, and
the pool opens its floor of connections up front."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from offsync_shared import db
from offsync_shared.settings import CommonSettings
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CAST = re.compile(r"::([a-z0-9_]+)\[\]")


def _bound_array_types() -> set[str]:
    """Every ``::T[]`` cast in the services' and shared code."""
    found: set[str] = set()
    for top in ("shared", "conflict-service", "profile-service", "publish-service", "sync-service"):
        for path in (ROOT / top).rglob("*.py"):
            if "tests" not in path.parts:
                found.update(f"{t}[]" for t in CAST.findall(path.read_text()))
    return found


def test_every_array_type_the_code_binds_is_warmed_at_connect() -> None:
    bound = _bound_array_types()
    assert "text[]" in bound  # the scan sees the code
    assert bound <= set(db.WARM_TYPES), f"add to offsync_shared.db.WARM_TYPES: {sorted(bound - set(db.WARM_TYPES))}"


async def test_a_fresh_pool_connection_binds_arrays_without_a_type_lookup(fresh_env: InfraEnv) -> None:
    sent: list[str] = []
    floor = CommonSettings.model_fields["pg_pool_min"].default
    pool = await db.create_pool(fresh_env.pg_dsn, min_size=floor, max_size=floor + 1)
    try:
        assert pool.get_size() == floor  # opened (and warmed) before anything asks for one
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            args = [["a"], [1], [2], [True], [{"k": 1}], None, [b"x"]]
            casts = ", ".join(f"${i}::{t}" for i, t in enumerate(db.WARM_TYPES, 1))
            row = await conn.fetchrow(f"SELECT {casts}", *args)
            assert row is not None and row[0] == ["a"] and row[4] == [{"k": 1}]
        assert not [q for q in sent if "typeinfo" in q], sent
    finally:
        await pool.close()


async def test_without_the_warm_up_the_first_array_statement_looks_types_up(fresh_env: InfraEnv) -> None:
    """The cost the warm-up moves (what asyncpg does on a connection made without it)."""
    sent: list[str] = []
    conn = await asyncpg.connect(fresh_env.pg_dsn)
    try:
        conn.add_query_logger(lambda record: sent.append(record.query))
        await conn.fetchval("SELECT $1::bigint[]", [1])  # text[] is the one asyncpg knows
        assert any("typeinfo" in q for q in sent), sent
    finally:
        await conn.close()
