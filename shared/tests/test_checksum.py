"""Bucket checksums: Python and SQL compute the same hash; sums update incrementally."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared import db
from offsync_shared.checksum import MOD, SQL_OP_HASH, combine, op_hash
from offsync_stack.testing import InfraEnv


@given(st.lists(st.integers(0, MOD - 1), max_size=20), st.integers(0, MOD - 1))
def test_add_then_remove_is_identity(hashes: list[int], h: int) -> None:
    total = 0
    for x in hashes:
        total = combine(total, add=x)
    assert combine(combine(total, add=h), remove=h) == total


@pytest.mark.integration
async def test_sql_hash_equals_python(fresh_env: InfraEnv) -> None:
    rows = [("account", "a1", 1), ("contact", "00000000-0000-0000-0000-00000000000f", 42), ("task", "ü-é", 2**40)]
    conn = await db.connect(fresh_env.pg_dsn)
    try:
        expr = SQL_OP_HASH.format(entity="$1::text", id="$2::text", version="$3::bigint")
        for entity, rid, version in rows:
            assert await conn.fetchval(f"SELECT {expr}", entity, rid, version) == op_hash(entity, rid, version)
    finally:
        await conn.close()
