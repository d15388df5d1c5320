"""Stores the organization's settings: one row, ``org_id = 'default'``, versioned by ``row_version``."""

from __future__ import annotations

from typing import Any

import asyncpg


async def get(conn: asyncpg.Connection) -> dict[str, Any]:
    return dict(await conn.fetchrow("SELECT * FROM admin.org_settings WHERE org_id = 'default'"))


async def update(
    conn: asyncpg.Connection, conflict_detection: bool | None, max_records_per_user: int | None
) -> dict[str, Any]:
    """Change what is given (``None`` keeps it) and bump ``row_version``."""
    cur = await conn.fetchrow("SELECT * FROM admin.org_settings WHERE org_id = 'default' FOR UPDATE")
    row = await conn.fetchrow(
        """UPDATE admin.org_settings SET conflict_detection = $1, max_records_per_user = $2,
               row_version = row_version + 1, updated_at = now() WHERE org_id = 'default' RETURNING *""",
        cur["conflict_detection"] if conflict_detection is None else conflict_detection,
        cur["max_records_per_user"] if max_records_per_user is None else max_records_per_user,
    )
    return dict(row)
