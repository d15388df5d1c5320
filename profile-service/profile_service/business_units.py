"""Stores the business-unit tree: one root made at bootstrap, every other unit under a parent;
a unit never moves under itself and is deleted only once nothing refers to it."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from profile_service import rows

COLS = "id, name, parent_id, created_at"


async def every(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await rows.every(conn, f"SELECT {COLS} FROM admin.business_units ORDER BY created_at, id")


async def get(conn: asyncpg.Connection, bu_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"SELECT {COLS} FROM admin.business_units WHERE id = $1", bu_id, "business unit")


async def _lock(conn: asyncpg.Connection, bu_id: str) -> asyncpg.Record:
    cur = await conn.fetchrow("SELECT * FROM admin.business_units WHERE id = $1 FOR UPDATE", bu_id)
    if cur is None:
        raise NotFound(f"business unit {bu_id!r} not found")
    return cur


async def create(conn: asyncpg.Connection, bu_id: str, name: str, parent_id: str) -> dict[str, Any]:
    await rows.must_exist(conn, "business_units", parent_id, "business unit", "parent_id")
    row = await conn.fetchrow(
        f"INSERT INTO admin.business_units(id, name, parent_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING {COLS}",
        bu_id,
        name,
        parent_id,
    )
    if row is None:
        raise Conflict(f"business unit {bu_id!r} already exists", field="id")
    return dict(row)


async def update(conn: asyncpg.Connection, bu_id: str, name: str | None, parent_id: str | None) -> dict[str, Any]:
    """Rename and/or move; ``None`` keeps what is there."""
    cur = await _lock(conn, bu_id)
    parent = cur["parent_id"]
    if parent_id is not None and parent_id != parent:
        if parent is None:
            raise ValidationFailed("the root business unit has no parent", field="parent_id")
        await rows.must_exist(conn, "business_units", parent_id, "business unit", "parent_id")
        in_subtree = await conn.fetchval(
            """WITH RECURSIVE sub(id) AS (SELECT $1::text UNION SELECT b.id FROM admin.business_units b JOIN sub ON b.parent_id = sub.id)
               SELECT EXISTS (SELECT 1 FROM sub WHERE id = $2)""",
            bu_id,
            parent_id,
        )
        if in_subtree:
            raise ValidationFailed("a business unit cannot move under itself or its descendants", field="parent_id")
        parent = parent_id
    row = await conn.fetchrow(
        f"UPDATE admin.business_units SET name = $2, parent_id = $3 WHERE id = $1 RETURNING {COLS}",
        bu_id,
        name if name is not None else cur["name"],
        parent,
    )
    return dict(row)


async def delete(conn: asyncpg.Connection, bu_id: str) -> dict[str, Any]:
    """Delete a leaf unit nobody belongs to; answers the row as it was."""
    cur = await _lock(conn, bu_id)
    if cur["parent_id"] is None:
        raise Conflict("the root business unit cannot be deleted")
    for table, col, what in (
        ("business_units", "parent_id", "child business units"),
        ("users", "business_unit_id", "users"),
        ("teams", "business_unit_id", "teams"),
    ):
        if await conn.fetchval(f"SELECT 1 FROM admin.{table} WHERE {col} = $1 LIMIT 1", bu_id):
            raise Conflict(f"business unit {bu_id!r} still has {what}; move or delete them first")
    await conn.execute("DELETE FROM admin.business_units WHERE id = $1", bu_id)
    return dict(cur)
