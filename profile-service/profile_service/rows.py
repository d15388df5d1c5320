"""Reads admin rows for the stores: one by its key (or NotFound naming what is missing), a list, or
whether a referenced row exists."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import NotFound, ValidationFailed


async def one(conn: asyncpg.Connection, sql: str, key: str, what: str) -> dict[str, Any]:
    """``sql`` selects by ``$1``; ``what`` names the resource in the 404 (e.g. "team")."""
    row = await conn.fetchrow(sql, key)
    if row is None:
        raise NotFound(f"{what} {key!r} not found")
    return dict(row)


async def every(conn: asyncpg.Connection, sql: str) -> list[dict[str, Any]]:
    """Every row ``sql`` selects, as dicts (a list route's answer)."""
    return [dict(r) for r in await conn.fetch(sql)]


async def must_exist(conn: asyncpg.Connection, table: str, value: str, what: str, field: str | None = None) -> None:
    """Refer to an existing row of ``admin.<table>`` by id: a missing path resource is 404, a
    missing referenced one (``field`` names where the request referred to it) 422."""
    if not await conn.fetchval(f"SELECT 1 FROM admin.{table} WHERE id = $1", value):
        if field is None:
            raise NotFound(f"{what} {value!r} not found")
        raise ValidationFailed(f"{what} {value!r} does not exist", field=field)
