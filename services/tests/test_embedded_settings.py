"""Settings given to the embedded PostgreSQL win over its own (a script measuring the server at
another shared_buffers, bench/scripts/copy_growth.py), and leave the others as they were."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from offsync_stack.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration


async def test_given_settings_override_the_embedded_ones_and_only_those(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False, settings=("shared_buffers=64MB", "work_mem=7MB"))
    await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(pg.dsn())
        try:
            shown = {k: await conn.fetchval(f"SHOW {k}") for k in ("shared_buffers", "work_mem", "io_method")}
        finally:
            await conn.close()
        assert shown == {"shared_buffers": "64MB", "work_mem": "7MB", "io_method": "sync"}
    finally:
        await asyncio.to_thread(pg.stop)
