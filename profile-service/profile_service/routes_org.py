"""Admin routes of the organization model: business units, teams, users, security roles, entity
metadata and org settings. Each change emits its admin event in the same transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import APIRouter, Response

from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from offsync_shared.events.admin import BusinessUnitChanged, RoleChanged, TeamChanged
from profile_service import identity, rows, validation
from profile_service.bootstrap import SYSTEM_ADMIN_ROLE_ID
from profile_service.context import CtxDep, new_id
from profile_service.profiles import mark_changed
from profile_service.schemas import (
    BusinessUnitIn,
    BusinessUnitPatch,
    EntityIn,
    EntityPatch,
    OrgSettingsPatch,
    PathId,
    PathName,
    RoleIn,
    RolePatch,
    TeamIn,
    TeamPatch,
    UserIn,
    UserPatch,
)

router = APIRouter(prefix="/v1")


async def _must(
    conn: asyncpg.Connection, table: str, key: str, value: str, what: str, field: str | None = None
) -> None:
    """Refer to an existing row: a missing path resource is 404, a missing referenced one 422."""
    if not await conn.fetchval(f"SELECT 1 FROM admin.{table} WHERE {key} = $1", value):
        if field is None:
            raise NotFound(f"{what} {value!r} not found")
        raise ValidationFailed(f"{what} {value!r} does not exist", field=field)


# --- business units ---------------------------------------------------------------------------

BU_COLS = "id, name, parent_id, created_at"


@router.get("/business-units", tags=["business units"])
async def list_business_units(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        return [
            dict(r) for r in await conn.fetch(f"SELECT {BU_COLS} FROM admin.business_units ORDER BY created_at, id")
        ]


@router.get("/business-units/{bu_id}", tags=["business units"])
async def get_business_unit(ctx: CtxDep, bu_id: PathId) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await rows.one(conn, f"SELECT {BU_COLS} FROM admin.business_units WHERE id = $1", bu_id, "business unit")


@router.post("/business-units", status_code=201, tags=["business units"])
async def create_business_unit(ctx: CtxDep, body: BusinessUnitIn) -> dict[str, Any]:
    bu_id = new_id(body.id)
    async with ctx.tx() as conn:
        await _must(conn, "business_units", "id", body.parent_id, "business unit", "parent_id")
        row = await conn.fetchrow(
            f"INSERT INTO admin.business_units(id, name, parent_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING {BU_COLS}",
            bu_id,
            body.name,
            body.parent_id,
        )
        if row is None:
            raise Conflict(f"business unit {bu_id!r} already exists", field="id")
        await ctx.emitter.business_unit(conn, bu_id)
    return dict(row)


@router.patch("/business-units/{bu_id}", tags=["business units"])
async def update_business_unit(ctx: CtxDep, bu_id: PathId, body: BusinessUnitPatch) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await conn.fetchrow("SELECT * FROM admin.business_units WHERE id = $1 FOR UPDATE", bu_id)
        if cur is None:
            raise NotFound(f"business unit {bu_id!r} not found")
        parent = cur["parent_id"]
        if body.parent_id is not None and body.parent_id != parent:
            if parent is None:
                raise ValidationFailed("the root business unit has no parent", field="parent_id")
            await _must(conn, "business_units", "id", body.parent_id, "business unit", "parent_id")
            in_subtree = await conn.fetchval(
                """WITH RECURSIVE sub(id) AS (SELECT $1::text UNION SELECT b.id FROM admin.business_units b JOIN sub ON b.parent_id = sub.id)
                   SELECT EXISTS (SELECT 1 FROM sub WHERE id = $2)""",
                bu_id,
                body.parent_id,
            )
            if in_subtree:
                raise ValidationFailed("a business unit cannot move under itself or its descendants", field="parent_id")
            parent = body.parent_id
        row = await conn.fetchrow(
            f"UPDATE admin.business_units SET name = $2, parent_id = $3 WHERE id = $1 RETURNING {BU_COLS}",
            bu_id,
            body.name if body.name is not None else cur["name"],
            parent,
        )
        await ctx.emitter.business_unit(conn, bu_id)
    return dict(row)


@router.delete("/business-units/{bu_id}", status_code=204, tags=["business units"])
async def delete_business_unit(ctx: CtxDep, bu_id: PathId) -> Response:
    async with ctx.tx() as conn:
        cur = await conn.fetchrow("SELECT * FROM admin.business_units WHERE id = $1 FOR UPDATE", bu_id)
        if cur is None:
            raise NotFound(f"business unit {bu_id!r} not found")
        if cur["parent_id"] is None:
            raise Conflict("the root business unit cannot be deleted")
        for table, what in (("business_units", "child business units"), ("users", "users"), ("teams", "teams")):
            col = "parent_id" if table == "business_units" else "business_unit_id"
            if await conn.fetchval(f"SELECT 1 FROM admin.{table} WHERE {col} = $1 LIMIT 1", bu_id):
                raise Conflict(f"business unit {bu_id!r} still has {what}; move or delete them first")
        await conn.execute("DELETE FROM admin.business_units WHERE id = $1", bu_id)
        await ctx.emitter.emit(
            conn, BusinessUnitChanged(id=bu_id, parent_id=cur["parent_id"], name=cur["name"], deleted=True)
        )
    return Response(status_code=204)


# --- teams ------------------------------------------------------------------------------------

TEAM_SQL = """SELECT t.id, t.name, t.business_unit_id, t.created_at,
  COALESCE((SELECT array_agg(user_id ORDER BY user_id) FROM admin.team_members WHERE team_id = t.id), '{}') AS member_ids,
  COALESCE((SELECT array_agg(role_id ORDER BY role_id) FROM admin.team_roles WHERE team_id = t.id), '{}') AS role_ids
FROM admin.teams t"""


async def _team(conn: asyncpg.Connection, team_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"{TEAM_SQL} WHERE t.id = $1", team_id, "team")


@router.get("/teams", tags=["teams"])
async def list_teams(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        return await rows.every(conn, f"{TEAM_SQL} ORDER BY t.created_at, t.id")


@router.get("/teams/{team_id}", tags=["teams"])
async def get_team(ctx: CtxDep, team_id: PathId) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await _team(conn, team_id)


@router.post("/teams", status_code=201, tags=["teams"])
async def create_team(ctx: CtxDep, body: TeamIn) -> dict[str, Any]:
    team_id = new_id(body.id)
    async with ctx.tx() as conn:
        await _must(conn, "business_units", "id", body.business_unit_id, "business unit", "business_unit_id")
        for i, uid in enumerate(body.member_ids):
            await _must(conn, "users", "id", uid, "user", f"member_ids[{i}]")
        for i, rid in enumerate(body.role_ids):
            await _must(conn, "roles", "id", rid, "role", f"role_ids[{i}]")
        ok = await conn.fetchval(
            "INSERT INTO admin.teams(id, name, business_unit_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
            team_id,
            body.name,
            body.business_unit_id,
        )
        if not ok:
            raise Conflict(f"team {team_id!r} already exists", field="id")
        await conn.executemany(
            "INSERT INTO admin.team_members(team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(team_id, u) for u in body.member_ids],
        )
        await conn.executemany(
            "INSERT INTO admin.team_roles(team_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(team_id, r) for r in body.role_ids],
        )
        await ctx.emitter.team(conn, team_id)
        for uid in sorted(set(body.member_ids)):
            await ctx.emitter.user(conn, uid)
        return await _team(conn, team_id)


@router.patch("/teams/{team_id}", tags=["teams"])
async def update_team(ctx: CtxDep, team_id: PathId, body: TeamPatch) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await _team(conn, team_id)
        if body.business_unit_id is not None:
            await _must(conn, "business_units", "id", body.business_unit_id, "business unit", "business_unit_id")
        await conn.execute(
            "UPDATE admin.teams SET name = $2, business_unit_id = $3 WHERE id = $1",
            team_id,
            body.name or cur["name"],
            body.business_unit_id or cur["business_unit_id"],
        )
        await ctx.emitter.team(conn, team_id)
        return await _team(conn, team_id)


@router.delete("/teams/{team_id}", status_code=204, tags=["teams"])
async def delete_team(ctx: CtxDep, team_id: PathId) -> Response:
    async with ctx.tx() as conn:
        cur = await _team(conn, team_id)
        await conn.execute("DELETE FROM admin.teams WHERE id = $1", team_id)
        await ctx.emitter.emit(conn, TeamChanged(id=team_id, business_unit_id=cur["business_unit_id"], deleted=True))
        for uid in cur["member_ids"]:
            await ctx.emitter.user(conn, uid)
    return Response(status_code=204)


@router.put("/teams/{team_id}/members/{user_id}", tags=["teams"])
async def add_team_member(ctx: CtxDep, team_id: PathId, user_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _must(conn, "teams", "id", team_id, "team")
        await _must(conn, "users", "id", user_id, "user")
        await conn.execute(
            "INSERT INTO admin.team_members(team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", team_id, user_id
        )
        await ctx.emitter.team(conn, team_id)
        await ctx.emitter.user(conn, user_id)
        return await _team(conn, team_id)


@router.delete("/teams/{team_id}/members/{user_id}", tags=["teams"])
async def remove_team_member(ctx: CtxDep, team_id: PathId, user_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _must(conn, "teams", "id", team_id, "team")
        if (
            await conn.execute("DELETE FROM admin.team_members WHERE team_id = $1 AND user_id = $2", team_id, user_id)
            == "DELETE 0"
        ):
            raise NotFound(f"user {user_id!r} is not a member of team {team_id!r}")
        await ctx.emitter.team(conn, team_id)
        await ctx.emitter.user(conn, user_id)
        return await _team(conn, team_id)


@router.put("/teams/{team_id}/roles/{role_id}", tags=["teams"])
async def assign_team_role(ctx: CtxDep, team_id: PathId, role_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _must(conn, "teams", "id", team_id, "team")
        await _must(conn, "roles", "id", role_id, "role")
        await conn.execute(
            "INSERT INTO admin.team_roles(team_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", team_id, role_id
        )
        await ctx.emitter.team(conn, team_id)
        return await _team(conn, team_id)


@router.delete("/teams/{team_id}/roles/{role_id}", tags=["teams"])
async def unassign_team_role(ctx: CtxDep, team_id: PathId, role_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _must(conn, "teams", "id", team_id, "team")
        if (
            await conn.execute("DELETE FROM admin.team_roles WHERE team_id = $1 AND role_id = $2", team_id, role_id)
            == "DELETE 0"
        ):
            raise NotFound(f"role {role_id!r} is not assigned to team {team_id!r}")
        await _ensure_an_admin_remains(conn)
        await ctx.emitter.team(conn, team_id)
        return await _team(conn, team_id)


# --- users ------------------------------------------------------------------------------------

USER_SQL = """SELECT u.id, u.username, u.name, u.email, u.business_unit_id, u.manager_id, u.language, u.enabled, u.created_at,
  COALESCE((SELECT array_agg(team_id ORDER BY team_id) FROM admin.team_members WHERE user_id = u.id), '{}') AS team_ids,
  COALESCE((SELECT array_agg(role_id ORDER BY role_id) FROM admin.user_roles WHERE user_id = u.id), '{}') AS role_ids,
  (SELECT profile_id FROM admin.profile_users WHERE user_id = u.id) AS profile_id
FROM admin.users u"""


async def _user(conn: asyncpg.Connection, user_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"{USER_SQL} WHERE u.id = $1", user_id, "user")


ANY_ADMIN_SQL = """
SELECT EXISTS (
  SELECT 1 FROM admin.users u WHERE u.enabled AND (
    EXISTS (SELECT 1 FROM admin.user_roles ur JOIN admin.roles r ON r.id = ur.role_id WHERE ur.user_id = u.id AND r.is_admin)
    OR EXISTS (SELECT 1 FROM admin.team_members tm JOIN admin.team_roles tr ON tr.team_id = tm.team_id
               JOIN admin.roles r ON r.id = tr.role_id WHERE tm.user_id = u.id AND r.is_admin)))
"""


async def _ensure_an_admin_remains(conn: asyncpg.Connection) -> None:
    """Refuse a change that would leave nobody able to call the admin API.

    The lock serializes such changes, so two admins removing each other concurrently cannot
    both pass the check on snapshots that still show the other one (read committed: the check
    after the lock sees the first transaction's commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('admin:last-admin'))")
    if not await conn.fetchval(ANY_ADMIN_SQL):
        raise Conflict("this change would leave no enabled administrator")


async def _check_manager(conn: asyncpg.Connection, user_id: str, manager_id: str) -> None:
    await _must(conn, "users", "id", manager_id, "user", "manager_id")
    cycle = await conn.fetchval(
        """WITH RECURSIVE up(id) AS (SELECT $2::text UNION SELECT u.manager_id FROM admin.users u JOIN up ON u.id = up.id WHERE u.manager_id IS NOT NULL)
           SELECT EXISTS (SELECT 1 FROM up WHERE id = $1)""",
        user_id,
        manager_id,
    )
    if cycle:
        raise ValidationFailed("the manager hierarchy cannot contain a cycle", field="manager_id")


@router.get("/users", tags=["users"])
async def list_users(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        return await rows.every(conn, f"{USER_SQL} ORDER BY u.created_at, u.id")


@router.get("/users/{user_id}", tags=["users"])
async def get_user(ctx: CtxDep, user_id: PathId) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await _user(conn, user_id)


@router.post("/users", status_code=201, tags=["users"])
async def create_user(ctx: CtxDep, body: UserIn) -> dict[str, Any]:
    user_id = new_id(body.id)
    password_hash = await identity.hash_new_password(body.password, ctx.settings.env)
    async with ctx.tx() as conn:
        await _must(conn, "business_units", "id", body.business_unit_id, "business unit", "business_unit_id")
        if body.manager_id is not None:
            if body.manager_id == user_id:
                raise ValidationFailed("a user cannot manage itself", field="manager_id")
            await _must(conn, "users", "id", body.manager_id, "user", "manager_id")
        for i, tid in enumerate(body.team_ids):
            await _must(conn, "teams", "id", tid, "team", f"team_ids[{i}]")
        for i, rid in enumerate(body.role_ids):
            await _must(conn, "roles", "id", rid, "role", f"role_ids[{i}]")
        ok = await conn.fetchval(
            """INSERT INTO admin.users(id, name, email, business_unit_id, manager_id, language, enabled)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1""",
            user_id,
            body.name,
            body.email,
            body.business_unit_id,
            body.manager_id,
            body.language,
            body.enabled,
        )
        if not ok:
            raise Conflict(f"user {user_id!r} already exists", field="id")
        await identity.set_username(conn, user_id, body.username or user_id)
        if password_hash is not None:
            await identity.store_password_hash(conn, user_id, password_hash)
        await conn.executemany(
            "INSERT INTO admin.team_members(team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(t, user_id) for t in body.team_ids],
        )
        await conn.executemany(
            "INSERT INTO admin.user_roles(user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(user_id, r) for r in body.role_ids],
        )
        await ctx.emitter.user(conn, user_id)
        for tid in sorted(set(body.team_ids)):
            await ctx.emitter.team(conn, tid)
        return await _user(conn, user_id)


@router.patch("/users/{user_id}", tags=["users"])
async def update_user(ctx: CtxDep, user_id: PathId, body: UserPatch) -> dict[str, Any]:
    sent = body.model_fields_set
    async with ctx.tx() as conn:
        cur = await _user(conn, user_id)
        new = {k: cur[k] for k in ("name", "email", "business_unit_id", "manager_id", "language", "enabled")}
        for k in sent - {"username"}:
            v = getattr(body, k)
            if v is None and k in ("name", "business_unit_id", "enabled"):
                raise ValidationFailed(f"{k} cannot be null", field=k)
            new[k] = v
        if "business_unit_id" in sent:
            await _must(conn, "business_units", "id", new["business_unit_id"], "business unit", "business_unit_id")
        if new["manager_id"] is not None and "manager_id" in sent:
            await _check_manager(conn, user_id, new["manager_id"])
        await conn.execute(
            """UPDATE admin.users SET name = $2, email = $3, business_unit_id = $4, manager_id = $5, language = $6, enabled = $7
               WHERE id = $1""",
            user_id,
            *new.values(),
        )
        if not new["enabled"]:
            await _ensure_an_admin_remains(conn)
        if body.username is not None:
            await identity.set_username(conn, user_id, body.username)
        await ctx.emitter.user(conn, user_id)
        return await _user(conn, user_id)


@router.delete("/users/{user_id}", status_code=204, tags=["users"])
async def delete_user(ctx: CtxDep, user_id: PathId) -> Response:
    async with ctx.tx() as conn:
        cur = await _user(conn, user_id)
        await conn.execute("UPDATE admin.users SET manager_id = NULL WHERE manager_id = $1", user_id)
        await conn.execute("DELETE FROM admin.users WHERE id = $1", user_id)
        await conn.execute("DELETE FROM admin.published_profile_users WHERE user_id = $1", user_id)
        if cur["profile_id"]:
            await mark_changed(conn, cur["profile_id"])
        await _ensure_an_admin_remains(conn)
        await ctx.emitter.user_deleted(conn, user_id, cur["business_unit_id"])
        for tid in cur["team_ids"]:
            await ctx.emitter.team(conn, tid)
    return Response(status_code=204)


@router.put("/users/{user_id}/roles/{role_id}", tags=["users"])
async def assign_user_role(ctx: CtxDep, user_id: PathId, role_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _must(conn, "users", "id", user_id, "user")
        await _must(conn, "roles", "id", role_id, "role")
        await conn.execute(
            "INSERT INTO admin.user_roles(user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", user_id, role_id
        )
        await ctx.emitter.user(conn, user_id)
        return await _user(conn, user_id)


@router.delete("/users/{user_id}/roles/{role_id}", tags=["users"])
async def unassign_user_role(ctx: CtxDep, user_id: PathId, role_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _must(conn, "users", "id", user_id, "user")
        if (
            await conn.execute("DELETE FROM admin.user_roles WHERE user_id = $1 AND role_id = $2", user_id, role_id)
            == "DELETE 0"
        ):
            raise NotFound(f"role {role_id!r} is not assigned to user {user_id!r}")
        await _ensure_an_admin_remains(conn)
        await ctx.emitter.user(conn, user_id)
        return await _user(conn, user_id)


# --- security roles ---------------------------------------------------------------------------

ROLE_COLS = "id, name, is_admin, read_offline_profile, privileges"


async def _check_privileges(conn: asyncpg.Connection, privileges: dict[str, Any]) -> None:
    known = {r["logical_name"] for r in await conn.fetch("SELECT logical_name FROM admin.entities")}
    for ent in privileges:
        if ent != "*" and ent not in known:
            raise ValidationFailed(f"privileges name unknown entity {ent!r}", field=f"privileges.{ent}"[:200])


@router.get("/roles", tags=["security roles"])
async def list_roles(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        return await rows.every(conn, f"SELECT {ROLE_COLS} FROM admin.roles ORDER BY name")


@router.get("/roles/{role_id}", tags=["security roles"])
async def get_role(ctx: CtxDep, role_id: PathId) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await rows.one(conn, f"SELECT {ROLE_COLS} FROM admin.roles WHERE id = $1", role_id, "role")


@router.post("/roles", status_code=201, tags=["security roles"])
async def create_role(ctx: CtxDep, body: RoleIn) -> dict[str, Any]:
    role_id = new_id(body.id)
    async with ctx.tx() as conn:
        await _check_privileges(conn, body.privileges)
        if await conn.fetchval("SELECT 1 FROM admin.roles WHERE name = $1", body.name):
            raise Conflict(f"a role named {body.name!r} already exists", field="name")
        row = await conn.fetchrow(
            f"""INSERT INTO admin.roles(id, name, is_admin, read_offline_profile, privileges) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT DO NOTHING RETURNING {ROLE_COLS}""",
            role_id,
            body.name,
            body.is_admin,
            body.read_offline_profile,
            body.privileges,
        )
        if row is None:
            raise Conflict(f"role {role_id!r} already exists", field="id")
        await ctx.emitter.role(conn, role_id)
    return dict(row)


@router.patch("/roles/{role_id}", tags=["security roles"])
async def update_role(ctx: CtxDep, role_id: PathId, body: RolePatch) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await conn.fetchrow(f"SELECT {ROLE_COLS} FROM admin.roles WHERE id = $1 FOR UPDATE", role_id)
        if cur is None:
            raise NotFound(f"role {role_id!r} not found")
        new = dict(cur)
        for k in body.model_fields_set:
            v = getattr(body, k)
            if v is None:
                raise ValidationFailed(f"{k} cannot be null", field=k)
            new[k] = v
        if body.privileges is not None:
            await _check_privileges(conn, body.privileges)
        if new["name"] != cur["name"] and await conn.fetchval("SELECT 1 FROM admin.roles WHERE name = $1", new["name"]):
            raise Conflict(f"a role named {new['name']!r} already exists", field="name")
        row = await conn.fetchrow(
            f"UPDATE admin.roles SET name = $2, is_admin = $3, read_offline_profile = $4, privileges = $5 WHERE id = $1 RETURNING {ROLE_COLS}",
            role_id,
            new["name"],
            new["is_admin"],
            new["read_offline_profile"],
            new["privileges"],
        )
        if not new["is_admin"]:
            await _ensure_an_admin_remains(conn)
        await ctx.emitter.role(conn, role_id)
    return dict(row)


@router.delete("/roles/{role_id}", status_code=204, tags=["security roles"])
async def delete_role(ctx: CtxDep, role_id: PathId) -> Response:
    async with ctx.tx() as conn:
        cur = await conn.fetchrow(f"SELECT {ROLE_COLS} FROM admin.roles WHERE id = $1", role_id)
        if cur is None:
            raise NotFound(f"role {role_id!r} not found")
        if role_id == SYSTEM_ADMIN_ROLE_ID:
            raise Conflict("the System Administrator role cannot be deleted")
        users = [
            r["user_id"] for r in await conn.fetch("SELECT user_id FROM admin.user_roles WHERE role_id = $1", role_id)
        ]
        teams = [
            r["team_id"] for r in await conn.fetch("SELECT team_id FROM admin.team_roles WHERE role_id = $1", role_id)
        ]
        await conn.execute("DELETE FROM admin.roles WHERE id = $1", role_id)
        await _ensure_an_admin_remains(conn)
        await ctx.emitter.emit(conn, RoleChanged(id=role_id, name=cur["name"], deleted=True))
        for uid in users:
            await ctx.emitter.user(conn, uid)
        for tid in teams:
            await ctx.emitter.team(conn, tid)
    return Response(status_code=204)


# --- entity metadata --------------------------------------------------------------------------

ENTITY_COLS = "logical_name, display_name, ownership, offline_capable, offline_enabled, attributes, conflict_policy"


async def _entity(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    return await rows.one(conn, f"SELECT {ENTITY_COLS} FROM admin.entities WHERE logical_name = $1", name, "entity")


def _attributes_json(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v.model_dump(exclude_none=True) for k, v in attrs.items()}


@router.get("/entities", tags=["entities"])
async def list_entities(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        return await rows.every(conn, f"SELECT {ENTITY_COLS} FROM admin.entities ORDER BY logical_name")


@router.get("/entities/{name}", tags=["entities"])
async def get_entity(ctx: CtxDep, name: PathName) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await _entity(conn, name)


async def validate_entity_attributes(
    conn: asyncpg.Connection, name: str, attrs: dict[str, Any], extra_known: tuple[str, ...] = ()
) -> None:
    known = [r["logical_name"] for r in await conn.fetch("SELECT logical_name FROM admin.entities")]
    problems = validation.check_attributes(name, attrs, [*known, *extra_known])
    if problems:
        p = problems[0]
        raise ValidationFailed(p.message, field=p.field, details={"problems": [x.as_dict() for x in problems]})


@router.post("/entities", status_code=201, tags=["entities"])
async def create_entity(ctx: CtxDep, body: EntityIn) -> dict[str, Any]:
    attrs = _attributes_json(body.attributes)
    if body.offline_enabled and not body.offline_capable:
        raise ValidationFailed(
            "an entity that cannot be offline cannot be enabled for offline", field="offline_enabled"
        )
    async with ctx.tx() as conn:
        await validate_entity_attributes(conn, body.logical_name, attrs)
        ok = await conn.fetchval(
            """INSERT INTO admin.entities(logical_name, display_name, ownership, offline_capable, offline_enabled, attributes, conflict_policy)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1""",
            body.logical_name,
            body.display_name,
            body.ownership,
            body.offline_capable,
            body.offline_enabled,
            attrs,
            body.conflict_policy,
        )
        if not ok:
            raise Conflict(f"entity {body.logical_name!r} already exists", field="logical_name")
        await ctx.emitter.entity(conn, body.logical_name)
        return await _entity(conn, body.logical_name)


@router.patch("/entities/{name}", tags=["entities"])
async def update_entity(ctx: CtxDep, name: PathName, body: EntityPatch) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await _entity(conn, name)
        await conn.execute("SELECT 1 FROM admin.entities WHERE logical_name = $1 FOR UPDATE", name)
        new = dict(cur)
        sent = body.model_fields_set
        for k in ("display_name", "offline_enabled"):
            if k in sent:
                if getattr(body, k) is None:
                    raise ValidationFailed(f"{k} cannot be null", field=k)
                new[k] = getattr(body, k)
        if "conflict_policy" in sent:
            new["conflict_policy"] = body.conflict_policy
        if body.attributes:
            added = _attributes_json(body.attributes)
            for k, v in added.items():
                old = cur["attributes"].get(k)
                if old is not None and (old.get("type"), old.get("target")) != (v.get("type"), v.get("target")):
                    raise Conflict(
                        f"attribute {k!r} exists with another type; attributes cannot change type",
                        field=f"attributes.{k}",
                    )
            await validate_entity_attributes(conn, name, added)
            new["attributes"] = {**cur["attributes"], **added}
        if new["offline_enabled"] and not cur["offline_capable"]:
            raise ValidationFailed(f"{name} cannot be enabled for mobile offline", field="offline_enabled")
        if cur["offline_enabled"] and not new["offline_enabled"]:
            used = [
                r["name"]
                for r in await conn.fetch(
                    "SELECT DISTINCT p.name FROM admin.profile_items i JOIN admin.profiles p ON p.id = i.profile_id WHERE i.entity = $1 ORDER BY 1",
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
        await ctx.emitter.entity(conn, name)
        return await _entity(conn, name)


# --- org settings -----------------------------------------------------------------------------


@router.get("/org-settings", tags=["org settings"])
async def get_org_settings(ctx: CtxDep) -> dict[str, Any]:
    async with ctx.read() as conn:
        row = await conn.fetchrow("SELECT * FROM admin.org_settings WHERE org_id = 'default'")
    return dict(row)


@router.patch("/org-settings", tags=["org settings"])
async def update_org_settings(ctx: CtxDep, body: OrgSettingsPatch) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await conn.fetchrow("SELECT * FROM admin.org_settings WHERE org_id = 'default' FOR UPDATE")
        row = await conn.fetchrow(
            """UPDATE admin.org_settings SET conflict_detection = $1, max_records_per_user = $2,
                   row_version = row_version + 1, updated_at = now() WHERE org_id = 'default' RETURNING *""",
            cur["conflict_detection"] if body.conflict_detection is None else body.conflict_detection,
            cur["max_records_per_user"] if body.max_records_per_user is None else body.max_records_per_user,
        )
    return dict(row)
