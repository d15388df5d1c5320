"""Stores entity metadata: attributes are added, never retyped; an entity is enabled for offline
only when it is offline-capable, and disabled only when no profile uses it."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import Conflict, ValidationFailed
from profile_service import rows, validation

COLS = "logical_name, display_name, ownership, offline_capable, offline_enabled, attributes, conflict_policy"


async def every(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await rows.every(conn, f"SELECT {COLS} FROM admin.entities ORDER BY logical_name")


async def get(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    return await rows.one(conn, f"SELECT {COLS} FROM admin.entities WHERE logical_name = $1", name, "entity")


async def check_attributes(conn: asyncpg.Connection, name: str, attrs: dict[str, Any]) -> None:
    known = [r["logical_name"] for r in await conn.fetch("SELECT logical_name FROM admin.entities")]
    problems = validation.check_attributes(name, attrs, known)
    if problems:
        p = problems[0]
        raise ValidationFailed(p.message, field=p.field, details={"problems": [x.as_dict() for x in problems]})


async def create(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    """``row`` holds every column of ``COLS``, attributes as JSON."""
    if row["offline_enabled"] and not row["offline_capable"]:
        raise ValidationFailed(
            "an entity that cannot be offline cannot be enabled for offline", field="offline_enabled"
        )
    await check_attributes(conn, row["logical_name"], row["attributes"])
    ok = await conn.fetchval(
        f"""INSERT INTO admin.entities({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1""",
        *(row[k] for k in COLS.split(", ")),
    )
    if not ok:
        raise Conflict(f"entity {row['logical_name']!r} already exists", field="logical_name")


async def update(conn: asyncpg.Connection, name: str, changes: dict[str, Any], added: dict[str, Any]) -> None:
    """``changes``: display_name, offline_enabled and conflict_policy as sent; ``added``: new
    attributes (as JSON) merged over the existing ones."""
    cur = await get(conn, name)
    await conn.execute("SELECT 1 FROM admin.entities WHERE logical_name = $1 FOR UPDATE", name)
    new = dict(cur)
    for k in ("display_name", "offline_enabled"):
        if k in changes:
            if changes[k] is None:
                raise ValidationFailed(f"{k} cannot be null", field=k)
            new[k] = changes[k]
    if "conflict_policy" in changes:
        new["conflict_policy"] = changes["conflict_policy"]
    if added:
        bad = validation.retyped(cur["attributes"], added)
        if bad:
            raise Conflict(
                f"attribute {bad[0]!r} exists with another type; attributes cannot change type",
                field=f"attributes.{bad[0]}",
            )
        await check_attributes(conn, name, added)
        new["attributes"] = {**cur["attributes"], **added}
    if new["offline_enabled"] and not cur["offline_capable"]:
        raise ValidationFailed(f"{name} cannot be enabled for mobile offline", field="offline_enabled")
    if cur["offline_enabled"] and not new["offline_enabled"]:
        used = [
            r["name"]
            for r in await conn.fetch(
                """SELECT DISTINCT p.name FROM admin.profile_items i JOIN admin.profiles p ON p.id = i.profile_id
                   WHERE i.entity = $1 ORDER BY 1""",
                name,
            )
        ]
        if used:
            raise Conflict(
                f"{name} is used by mobile offline profiles ({', '.join(used)}); remove it from them first",
                field="offline_enabled",
                details={"profiles": used},
            )
    await conn.execute(
        """UPDATE admin.entities SET display_name = $2, offline_enabled = $3, attributes = $4, conflict_policy = $5
           WHERE logical_name = $1""",
        name,
        new["display_name"],
        new["offline_enabled"],
        new["attributes"],
        new["conflict_policy"],
    )


async def offline_enabled(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Name, display name and attributes of the entities enabled for offline (what a device reads)."""
    return await rows.every(
        conn,
        "SELECT logical_name, display_name, attributes FROM admin.entities WHERE offline_enabled ORDER BY logical_name",
    )


async def upsert(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    """Create or update (display name, offline switch, attributes) from a checked solution import;
    ``row`` holds every column of ``COLS``."""
    await conn.execute(
        f"""INSERT INTO admin.entities({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (logical_name) DO UPDATE
            SET display_name = EXCLUDED.display_name, offline_enabled = EXCLUDED.offline_enabled, attributes = EXCLUDED.attributes""",
        *(row[k] for k in COLS.split(", ")),
    )
