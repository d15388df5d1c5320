"""Stores the org's users (with their teams, roles and profile): the manager hierarchy stays
acyclic and deleting a user takes them out of every profile and hierarchy they were in."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import Conflict, ValidationFailed
from profile_service import identity, org_links, rows
from profile_service.profiles import mark_changed

SELECT = """SELECT u.id, u.username, u.name, u.email, u.business_unit_id, u.manager_id, u.language, u.enabled, u.created_at,
  COALESCE((SELECT array_agg(team_id ORDER BY team_id) FROM admin.team_members WHERE user_id = u.id), '{}') AS team_ids,
  COALESCE((SELECT array_agg(role_id ORDER BY role_id) FROM admin.user_roles WHERE user_id = u.id), '{}') AS role_ids,
  (SELECT profile_id FROM admin.profile_users WHERE user_id = u.id) AS profile_id
FROM admin.users u"""

# What PATCH may change on the users row itself, in the UPDATE's parameter order.
FIELDS = ("name", "email", "business_unit_id", "manager_id", "language", "enabled")
NOT_NULL = frozenset({"name", "business_unit_id", "enabled"})


async def every(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await rows.every(conn, f"{SELECT} ORDER BY u.created_at, u.id")


async def get(conn: asyncpg.Connection, user_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"{SELECT} WHERE u.id = $1", user_id, "user")


async def check_manager(conn: asyncpg.Connection, user_id: str, manager_id: str) -> None:
    await rows.must_exist(conn, "users", manager_id, "user", "manager_id")
    cycle = await conn.fetchval(
        """WITH RECURSIVE up(id) AS (SELECT $2::text UNION SELECT u.manager_id FROM admin.users u JOIN up ON u.id = up.id WHERE u.manager_id IS NOT NULL)
           SELECT EXISTS (SELECT 1 FROM up WHERE id = $1)""",
        user_id,
        manager_id,
    )
    if cycle:
        raise ValidationFailed("the manager hierarchy cannot contain a cycle", field="manager_id")


async def create(
    conn: asyncpg.Connection,
    user_id: str,
    fields: dict[str, Any],
    *,
    username: str,
    password_hash: str | None,
    team_ids: list[str],
    role_ids: list[str],
) -> None:
    """``fields`` holds every name of ``FIELDS``."""
    await rows.must_exist(conn, "business_units", fields["business_unit_id"], "business unit", "business_unit_id")
    if fields["manager_id"] is not None:
        if fields["manager_id"] == user_id:
            raise ValidationFailed("a user cannot manage itself", field="manager_id")
        await rows.must_exist(conn, "users", fields["manager_id"], "user", "manager_id")
    for i, tid in enumerate(team_ids):
        await rows.must_exist(conn, "teams", tid, "team", f"team_ids[{i}]")
    for i, rid in enumerate(role_ids):
        await rows.must_exist(conn, "roles", rid, "role", f"role_ids[{i}]")
    ok = await conn.fetchval(
        """INSERT INTO admin.users(id, name, email, business_unit_id, manager_id, language, enabled)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1""",
        user_id,
        *(fields[k] for k in FIELDS),
    )
    if not ok:
        raise Conflict(f"user {user_id!r} already exists", field="id")
    await identity.set_username(conn, user_id, username)
    if password_hash is not None:
        await identity.store_password_hash(conn, user_id, password_hash)
    await org_links.USER_TEAM.add_many(conn, user_id, team_ids)
    await org_links.USER_ROLE.add_many(conn, user_id, role_ids)


async def update(conn: asyncpg.Connection, user_id: str, changes: dict[str, Any], username: str | None) -> None:
    """``changes``: the ``FIELDS`` the caller sent (null clears, where a field may be null)."""
    cur = await get(conn, user_id)
    new = {k: cur[k] for k in FIELDS}
    for k, v in changes.items():
        if v is None and k in NOT_NULL:
            raise ValidationFailed(f"{k} cannot be null", field=k)
        new[k] = v
    if "business_unit_id" in changes:
        await rows.must_exist(conn, "business_units", new["business_unit_id"], "business unit", "business_unit_id")
    if new["manager_id"] is not None and "manager_id" in changes:
        await check_manager(conn, user_id, new["manager_id"])
    await conn.execute(
        """UPDATE admin.users SET name = $2, email = $3, business_unit_id = $4, manager_id = $5, language = $6, enabled = $7
           WHERE id = $1""",
        user_id,
        *(new[k] for k in FIELDS),
    )
    if username is not None:
        await identity.set_username(conn, user_id, username)


async def delete(conn: asyncpg.Connection, user_id: str) -> dict[str, Any]:
    """Delete the user; answers them as they were (their teams need telling)."""
    cur = await get(conn, user_id)
    await conn.execute("UPDATE admin.users SET manager_id = NULL WHERE manager_id = $1", user_id)
    await conn.execute("DELETE FROM admin.users WHERE id = $1", user_id)
    await conn.execute("DELETE FROM admin.published_profile_users WHERE user_id = $1", user_id)
    if cur["profile_id"]:
        await mark_changed(conn, cur["profile_id"])
    return cur


async def name_of(conn: asyncpg.Connection, user_id: str) -> str | None:
    name: str | None = await conn.fetchval("SELECT name FROM admin.users WHERE id = $1", user_id)
    return name


async def is_enabled(conn: asyncpg.Connection, user_id: str) -> bool | None:
    """Whether the user is enabled; None when there is no such user."""
    enabled: bool | None = await conn.fetchval("SELECT enabled FROM admin.users WHERE id = $1", user_id)
    return enabled
