"""Fixtures the integration tests of the shared runtime have in common."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from offsync_shared import db
from offsync_stack.testing import InfraEnv


@pytest.fixture
async def pool_of_one(fresh_env: InfraEnv) -> AsyncIterator[asyncpg.Pool]:
    """The services' pool (offsync_shared.db) over a fresh database, held to one connection so
    that every acquire returns the same one."""
    pool = await db.create_pool(fresh_env.pg_dsn, min_size=1, max_size=1)
    try:
        yield pool
    finally:
        await pool.close()
