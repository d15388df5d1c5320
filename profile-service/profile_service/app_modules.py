"""Stores app modules and the mobile offline profiles attached to them: names are unique, and a
profile attaches only to a module enabled for mobile offline."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from profile_service import rows

SELECT = """SELECT a.id, a.name, a.offline_enabled,
  COALESCE((SELECT array_agg(profile_id ORDER BY profile_id) FROM admin.app_module_profiles WHERE app_module_id = a.id), '{}') AS profile_ids
FROM admin.app_modules a"""


async def every(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await rows.every(conn, f"{SELECT} ORDER BY a.name")


async def get(conn: asyncpg.Connection, app_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"{SELECT} WHERE a.id = $1", app_id, "app module")


async def _name_free(conn: asyncpg.Connection, name: str) -> None:
    if await conn.fetchval("SELECT 1 FROM admin.app_modules WHERE name = $1", name):
        raise Conflict(f"an app module named {name!r} already exists", field="name")


async def create(conn: asyncpg.Connection, app_id: str, name: str, offline_enabled: bool) -> None:
    await _name_free(conn, name)
    if not await conn.fetchval(
        "INSERT INTO admin.app_modules(id, name, offline_enabled) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
        app_id,
        name,
        offline_enabled,
    ):
        raise Conflict(f"app module {app_id!r} already exists", field="id")


async def update(conn: asyncpg.Connection, app_id: str, name: str | None, offline_enabled: bool | None) -> None:
    cur = await get(conn, app_id)
    if name is not None and name != cur["name"]:
        await _name_free(conn, name)
    await conn.execute(
        "UPDATE admin.app_modules SET name = $2, offline_enabled = $3 WHERE id = $1",
        app_id,
        name if name is not None else cur["name"],
        offline_enabled if offline_enabled is not None else cur["offline_enabled"],
    )


async def delete(conn: asyncpg.Connection, app_id: str) -> None:
    if await conn.execute("DELETE FROM admin.app_modules WHERE id = $1", app_id) == "DELETE 0":
        raise NotFound(f"app module {app_id!r} not found")


async def attach(conn: asyncpg.Connection, app_id: str, profile_id: str) -> None:
    cur = await get(conn, app_id)
    await rows.must_exist(conn, "profiles", profile_id, "profile")
    if not cur["offline_enabled"]:
        raise ValidationFailed(
            f"enable mobile offline on app module {cur['name']!r} before attaching profiles", field="offline_enabled"
        )
    await conn.execute(
        "INSERT INTO admin.app_module_profiles(app_module_id, profile_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        app_id,
        profile_id,
    )


async def detach(conn: asyncpg.Connection, app_id: str, profile_id: str) -> None:
    await get(conn, app_id)
    status = await conn.execute(
        "DELETE FROM admin.app_module_profiles WHERE app_module_id = $1 AND profile_id = $2", app_id, profile_id
    )
    if status == "DELETE 0":
        raise NotFound(f"profile {profile_id!r} is not attached to app module {app_id!r}")
