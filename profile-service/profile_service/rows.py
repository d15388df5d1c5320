"""Reads admin rows for the routes: one by its key (or NotFound naming what is missing), or a list."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import NotFound


async def one(conn: asyncpg.Connection, sql: str, key: str, what: str) -> dict[str, Any]:
    """``sql`` selects by ``$1``; ``what`` names the resource in the 404 (e.g. "team")."""
    row = await conn.fetchrow(sql, key)
    if row is None:
        raise NotFound(f"{what} {key!r} not found")
    return dict(row)


async def every(conn: asyncpg.Connection, sql: str) -> list[dict[str, Any]]:
    """Every row ``sql`` selects, as dicts (a list route's answer)."""
    return [dict(r) for r in await conn.fetch(sql)]
