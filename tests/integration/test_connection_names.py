"""A service's database connections carry its name (``application_name``), so an operator reading
``pg_stat_activity`` or the server's log sees which service holds which connection."""

from __future__ import annotations

import asyncio

import pytest

from offsync_shared import db
from offsync_shared.doorbell import Doorbell
from offsync_shared.task_stop import stop_tasks
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration


async def test_pool_and_listener_connections_are_named(fresh_env: InfraEnv) -> None:
    pool = await db.create_pool(fresh_env.pg_dsn, name="conflict-service")
    bell = Doorbell(fresh_env.pg_dsn, pool, name="conflict-service listener")
    bell.listen("offsync_test_channel", lambda _payload: None)
    running = asyncio.create_task(bell.run())
    try:

        async def listening() -> bool:
            return bell.listening

        await eventually(listening, timeout=10, message="the bell listening")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('application_name')") == "conflict-service"
            listener = await conn.fetchval(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1", bell.listener_pid
            )
        assert listener == "conflict-service listener"
    finally:
        await stop_tasks([running])
        await pool.close()


async def test_a_pool_keeps_its_other_server_settings(fresh_env: InfraEnv) -> None:
    pool = await db.create_pool(fresh_env.pg_dsn, name="sync-service reads", server_settings={"work_mem": "8MB"})
    try:
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT current_setting('application_name') AS a, current_setting('work_mem') AS w"
            )
        assert (row["a"], row["w"]) == ("sync-service reads", "8MB")
    finally:
        await pool.close()
