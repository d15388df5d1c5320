"""Stores security roles: unique names, privileges only on known entities, and the System
Administrator role that cannot be deleted."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from profile_service import rows
from profile_service.bootstrap import SYSTEM_ADMIN_ROLE_ID

COLS = "id, name, is_admin, read_offline_profile, privileges"
# What PATCH may change, in the UPDATE's parameter order.
FIELDS = ("name", "is_admin", "read_offline_profile", "privileges")


async def every(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await rows.every(conn, f"SELECT {COLS} FROM admin.roles ORDER BY name")


async def get(conn: asyncpg.Connection, role_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"SELECT {COLS} FROM admin.roles WHERE id = $1", role_id, "role")


async def _check_privileges(conn: asyncpg.Connection, privileges: dict[str, Any]) -> None:
    known = {r["logical_name"] for r in await conn.fetch("SELECT logical_name FROM admin.entities")}
    for ent in privileges:
        if ent != "*" and ent not in known:
            raise ValidationFailed(f"privileges name unknown entity {ent!r}", field=f"privileges.{ent}"[:200])


async def _name_free(conn: asyncpg.Connection, name: str) -> None:
    if await conn.fetchval("SELECT 1 FROM admin.roles WHERE name = $1", name):
        raise Conflict(f"a role named {name!r} already exists", field="name")


async def create(conn: asyncpg.Connection, role_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` holds every name of ``FIELDS``."""
    await _check_privileges(conn, fields["privileges"])
    await _name_free(conn, fields["name"])
    row = await conn.fetchrow(
        f"""INSERT INTO admin.roles(id, name, is_admin, read_offline_profile, privileges) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT DO NOTHING RETURNING {COLS}""",
        role_id,
        *(fields[k] for k in FIELDS),
    )
    if row is None:
        raise Conflict(f"role {role_id!r} already exists", field="id")
    return dict(row)


async def update(conn: asyncpg.Connection, role_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``changes``: the ``FIELDS`` the caller sent; none of them may be null."""
    cur = await conn.fetchrow(f"SELECT {COLS} FROM admin.roles WHERE id = $1 FOR UPDATE", role_id)
    if cur is None:
        raise NotFound(f"role {role_id!r} not found")
    new = dict(cur)
    for k, v in changes.items():
        if v is None:
            raise ValidationFailed(f"{k} cannot be null", field=k)
        new[k] = v
    if "privileges" in changes:
        await _check_privileges(conn, new["privileges"])
    if new["name"] != cur["name"]:
        await _name_free(conn, new["name"])
    row = await conn.fetchrow(
        f"""UPDATE admin.roles SET name = $2, is_admin = $3, read_offline_profile = $4, privileges = $5 WHERE id = $1
            RETURNING {COLS}""",
        role_id,
        *(new[k] for k in FIELDS),
    )
    return dict(row)


async def delete(conn: asyncpg.Connection, role_id: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """Delete the role; answers it as it was and the users and teams that held it directly."""
    cur = await get(conn, role_id)
    if role_id == SYSTEM_ADMIN_ROLE_ID:
        raise Conflict("the System Administrator role cannot be deleted")
    users = [r["user_id"] for r in await conn.fetch("SELECT user_id FROM admin.user_roles WHERE role_id = $1", role_id)]
    teams = [r["team_id"] for r in await conn.fetch("SELECT team_id FROM admin.team_roles WHERE role_id = $1", role_id)]
    await conn.execute("DELETE FROM admin.roles WHERE id = $1", role_id)
    return cur, users, teams
