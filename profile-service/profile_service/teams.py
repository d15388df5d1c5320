"""Stores teams with their members and roles (the links live in ``org_links``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import Conflict
from profile_service import org_links, rows

SELECT = """SELECT t.id, t.name, t.business_unit_id, t.created_at,
  COALESCE((SELECT array_agg(user_id ORDER BY user_id) FROM admin.team_members WHERE team_id = t.id), '{}') AS member_ids,
  COALESCE((SELECT array_agg(role_id ORDER BY role_id) FROM admin.team_roles WHERE team_id = t.id), '{}') AS role_ids
FROM admin.teams t"""


async def every(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await rows.every(conn, f"{SELECT} ORDER BY t.created_at, t.id")


async def get(conn: asyncpg.Connection, team_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"{SELECT} WHERE t.id = $1", team_id, "team")


async def create(
    conn: asyncpg.Connection, team_id: str, name: str, business_unit_id: str, member_ids: list[str], role_ids: list[str]
) -> None:
    await rows.must_exist(conn, "business_units", business_unit_id, "business unit", "business_unit_id")
    for i, uid in enumerate(member_ids):
        await rows.must_exist(conn, "users", uid, "user", f"member_ids[{i}]")
    for i, rid in enumerate(role_ids):
        await rows.must_exist(conn, "roles", rid, "role", f"role_ids[{i}]")
    ok = await conn.fetchval(
        "INSERT INTO admin.teams(id, name, business_unit_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
        team_id,
        name,
        business_unit_id,
    )
    if not ok:
        raise Conflict(f"team {team_id!r} already exists", field="id")
    await org_links.TEAM_MEMBER.add_many(conn, team_id, member_ids)
    await org_links.TEAM_ROLE.add_many(conn, team_id, role_ids)


async def update(conn: asyncpg.Connection, team_id: str, name: str | None, business_unit_id: str | None) -> None:
    cur = await get(conn, team_id)
    if business_unit_id is not None:
        await rows.must_exist(conn, "business_units", business_unit_id, "business unit", "business_unit_id")
    await conn.execute(
        "UPDATE admin.teams SET name = $2, business_unit_id = $3 WHERE id = $1",
        team_id,
        name or cur["name"],
        business_unit_id or cur["business_unit_id"],
    )


async def delete(conn: asyncpg.Connection, team_id: str) -> dict[str, Any]:
    """Delete the team; answers it as it was (its members need telling)."""
    cur = await get(conn, team_id)
    await conn.execute("DELETE FROM admin.teams WHERE id = $1", team_id)
    return cur
