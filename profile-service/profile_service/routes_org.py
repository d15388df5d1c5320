"""Admin routes of the organization model: business units, teams, users, security roles, entity
metadata and org settings. The stores hold the SQL; each route checks its input, calls them and
emits the change's admin event in the same transaction."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from offsync_shared.events.admin import BusinessUnitChanged, RoleChanged, TeamChanged
from profile_service import business_units, entities, identity, org_settings, roles, teams, users
from profile_service.context import CtxDep, new_id
from profile_service.documented_route import DocumentedRoute
from profile_service.last_admin import ensure_an_admin_remains
from profile_service.org_links import TEAM_MEMBER, TEAM_ROLE, USER_ROLE
from profile_service.responses import BusinessUnitOut, EntityOut, OrgSettingsOut, RoleOut, TeamOut, UserOut
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

router = APIRouter(prefix="/v1", route_class=DocumentedRoute)
NO_CONTENT: dict[str, Any] = {"status_code": 204, "response_class": Response}

# --- business units ---------------------------------------------------------------------------

BU: dict[str, Any] = {"tags": ["business units"], "response_model": BusinessUnitOut}


@router.get("/business-units", tags=["business units"], response_model=list[BusinessUnitOut])
async def list_business_units(ctx: CtxDep) -> list[BusinessUnitOut]:
    """List business units.

    Every business unit, oldest first; the root (made at bootstrap) has no parent."""
    async with ctx.read() as conn:
        return [BusinessUnitOut.model_validate(r) for r in await business_units.every(conn)]


@router.get("/business-units/{bu_id}", **BU)
async def get_business_unit(ctx: CtxDep, bu_id: PathId) -> BusinessUnitOut:
    """Read a business unit.

    404 when there is no such unit."""
    async with ctx.read() as conn:
        return BusinessUnitOut.model_validate(await business_units.get(conn, bu_id))


@router.post("/business-units", status_code=201, **BU)
async def create_business_unit(ctx: CtxDep, body: BusinessUnitIn) -> BusinessUnitOut:
    """Create a business unit.

    Under an existing parent (422 otherwise); 409 when the id is taken."""
    bu_id = new_id(body.id)
    async with ctx.tx() as conn:
        row = await business_units.create(conn, bu_id, body.name, body.parent_id)
        await ctx.emitter.business_unit(conn, bu_id)
    return BusinessUnitOut.model_validate(row)


@router.patch("/business-units/{bu_id}", **BU)
async def update_business_unit(ctx: CtxDep, bu_id: PathId, body: BusinessUnitPatch) -> BusinessUnitOut:
    """Rename or move a business unit.

    A unit cannot move under itself or its descendants, and the root has no parent (422)."""
    async with ctx.tx() as conn:
        row = await business_units.update(conn, bu_id, body.name, body.parent_id)
        await ctx.emitter.business_unit(conn, bu_id)
    return BusinessUnitOut.model_validate(row)


@router.delete("/business-units/{bu_id}", **NO_CONTENT, tags=["business units"])
async def delete_business_unit(ctx: CtxDep, bu_id: PathId) -> Response:
    """Delete a business unit.

    Only a unit without child units, users and teams (409 otherwise); never the root."""
    async with ctx.tx() as conn:
        cur = await business_units.delete(conn, bu_id)
        await ctx.emitter.emit(
            conn, BusinessUnitChanged(id=bu_id, parent_id=cur["parent_id"], name=cur["name"], deleted=True)
        )
    return Response(status_code=204)


# --- teams ------------------------------------------------------------------------------------

TEAM: dict[str, Any] = {"tags": ["teams"], "response_model": TeamOut}


@router.get("/teams", tags=["teams"], response_model=list[TeamOut])
async def list_teams(ctx: CtxDep) -> list[TeamOut]:
    """List teams.

    Every team with its members and roles, oldest first."""
    async with ctx.read() as conn:
        return [TeamOut.model_validate(r) for r in await teams.every(conn)]


@router.get("/teams/{team_id}", **TEAM)
async def get_team(ctx: CtxDep, team_id: PathId) -> TeamOut:
    """Read a team.

    The team with its members and roles."""
    async with ctx.read() as conn:
        return TeamOut.model_validate(await teams.get(conn, team_id))


@router.post("/teams", status_code=201, **TEAM)
async def create_team(ctx: CtxDep, body: TeamIn) -> TeamOut:
    """Create a team.

    In an existing business unit, with existing members and roles (422 naming the first missing one)."""
    team_id = new_id(body.id)
    async with ctx.tx() as conn:
        await teams.create(conn, team_id, body.name, body.business_unit_id, body.member_ids, body.role_ids)
        await ctx.emitter.team(conn, team_id)
        for uid in sorted(set(body.member_ids)):
            await ctx.emitter.user(conn, uid)
        return TeamOut.model_validate(await teams.get(conn, team_id))


@router.patch("/teams/{team_id}", **TEAM)
async def update_team(ctx: CtxDep, team_id: PathId, body: TeamPatch) -> TeamOut:
    """Rename a team or move it to another business unit.

    Members and roles change through their own routes."""
    async with ctx.tx() as conn:
        await teams.update(conn, team_id, body.name, body.business_unit_id)
        await ctx.emitter.team(conn, team_id)
        return TeamOut.model_validate(await teams.get(conn, team_id))


@router.delete("/teams/{team_id}", **NO_CONTENT, tags=["teams"])
async def delete_team(ctx: CtxDep, team_id: PathId) -> Response:
    """Delete a team.

    Its members lose the roles they held through it."""
    async with ctx.tx() as conn:
        cur = await teams.delete(conn, team_id)
        await ctx.emitter.emit(conn, TeamChanged(id=team_id, business_unit_id=cur["business_unit_id"], deleted=True))
        for uid in cur["member_ids"]:
            await ctx.emitter.user(conn, uid)
    return Response(status_code=204)


@router.put("/teams/{team_id}/members/{user_id}", **TEAM)
async def add_team_member(ctx: CtxDep, team_id: PathId, user_id: PathId) -> TeamOut:
    """Add a member to a team.

    Idempotent; 404 when the team or the user does not exist."""
    async with ctx.tx() as conn:
        await TEAM_MEMBER.add(conn, team_id, user_id)
        await ctx.emitter.team(conn, team_id)
        await ctx.emitter.user(conn, user_id)
        return TeamOut.model_validate(await teams.get(conn, team_id))


@router.delete("/teams/{team_id}/members/{user_id}", **TEAM)
async def remove_team_member(ctx: CtxDep, team_id: PathId, user_id: PathId) -> TeamOut:
    """Remove a member from a team.

    404 when the user is not a member."""
    async with ctx.tx() as conn:
        await TEAM_MEMBER.remove(conn, team_id, user_id)
        await ctx.emitter.team(conn, team_id)
        await ctx.emitter.user(conn, user_id)
        return TeamOut.model_validate(await teams.get(conn, team_id))


@router.put("/teams/{team_id}/roles/{role_id}", **TEAM)
async def assign_team_role(ctx: CtxDep, team_id: PathId, role_id: PathId) -> TeamOut:
    """Assign a security role to a team.

    Every member holds it through the team. Idempotent."""
    async with ctx.tx() as conn:
        await TEAM_ROLE.add(conn, team_id, role_id)
        await ctx.emitter.team(conn, team_id)
        return TeamOut.model_validate(await teams.get(conn, team_id))


@router.delete("/teams/{team_id}/roles/{role_id}", **TEAM)
async def unassign_team_role(ctx: CtxDep, team_id: PathId, role_id: PathId) -> TeamOut:
    """Take a security role from a team.

    409 when that would leave no enabled administrator; 404 when the team does not hold it."""
    async with ctx.tx() as conn:
        await TEAM_ROLE.remove(conn, team_id, role_id)
        await ensure_an_admin_remains(conn)
        await ctx.emitter.team(conn, team_id)
        return TeamOut.model_validate(await teams.get(conn, team_id))


# --- users ------------------------------------------------------------------------------------

USER: dict[str, Any] = {"tags": ["users"], "response_model": UserOut}


@router.get("/users", tags=["users"], response_model=list[UserOut])
async def list_users(ctx: CtxDep) -> list[UserOut]:
    """List users.

    Every user with their teams, directly held roles and profile, oldest first."""
    async with ctx.read() as conn:
        return [UserOut.model_validate(r) for r in await users.every(conn)]


@router.get("/users/{user_id}", **USER)
async def get_user(ctx: CtxDep, user_id: PathId) -> UserOut:
    """Read a user.

    404 when there is no such user."""
    async with ctx.read() as conn:
        return UserOut.model_validate(await users.get(conn, user_id))


@router.post("/users", status_code=201, **USER)
async def create_user(ctx: CtxDep, body: UserIn) -> UserOut:
    """Create a user.

    In an existing business unit, with an optional manager, teams, roles, username (default: the id) and initial
    password (stored as an argon2id hash, never returned)."""
    user_id = new_id(body.id)
    password_hash = await identity.hash_new_password(body.password, ctx.settings.env)
    async with ctx.tx() as conn:
        await users.create(
            conn,
            user_id,
            body.model_dump(include=set(users.FIELDS)),
            username=body.username or user_id,
            password_hash=password_hash,
            team_ids=body.team_ids,
            role_ids=body.role_ids,
        )
        await ctx.emitter.user(conn, user_id)
        for tid in sorted(set(body.team_ids)):
            await ctx.emitter.team(conn, tid)
        return UserOut.model_validate(await users.get(conn, user_id))


@router.patch("/users/{user_id}", **USER)
async def update_user(ctx: CtxDep, user_id: PathId, body: UserPatch) -> UserOut:
    """Change a user.

    Only the fields sent change; manager_id null clears the manager. The manager hierarchy stays acyclic (422),
    and disabling the last enabled administrator is refused (409)."""
    changes = {k: getattr(body, k) for k in body.model_fields_set - {"username"}}
    async with ctx.tx() as conn:
        await users.update(conn, user_id, changes, body.username)
        if changes.get("enabled") is False:
            await ensure_an_admin_remains(conn)
        await ctx.emitter.user(conn, user_id)
        return UserOut.model_validate(await users.get(conn, user_id))


@router.delete("/users/{user_id}", **NO_CONTENT, tags=["users"])
async def delete_user(ctx: CtxDep, user_id: PathId) -> Response:
    """Delete a user.

    Leaves their profile and teams; those they managed lose their manager. Never the last admin (409)."""
    async with ctx.tx() as conn:
        cur = await users.delete(conn, user_id)
        await ensure_an_admin_remains(conn)
        await ctx.emitter.user_deleted(conn, user_id, cur["business_unit_id"])
        for tid in cur["team_ids"]:
            await ctx.emitter.team(conn, tid)
    return Response(status_code=204)


@router.put("/users/{user_id}/roles/{role_id}", **USER)
async def assign_user_role(ctx: CtxDep, user_id: PathId, role_id: PathId) -> UserOut:
    """Assign a security role to a user.

    Idempotent; 404 when the user or the role does not exist."""
    async with ctx.tx() as conn:
        await USER_ROLE.add(conn, user_id, role_id)
        await ctx.emitter.user(conn, user_id)
        return UserOut.model_validate(await users.get(conn, user_id))


@router.delete("/users/{user_id}/roles/{role_id}", **USER)
async def unassign_user_role(ctx: CtxDep, user_id: PathId, role_id: PathId) -> UserOut:
    """Take a security role from a user.

    409 when that would leave no enabled administrator; 404 when the user does not hold it directly."""
    async with ctx.tx() as conn:
        await USER_ROLE.remove(conn, user_id, role_id)
        await ensure_an_admin_remains(conn)
        await ctx.emitter.user(conn, user_id)
        return UserOut.model_validate(await users.get(conn, user_id))


# --- security roles ---------------------------------------------------------------------------

ROLE: dict[str, Any] = {"tags": ["security roles"], "response_model": RoleOut}


@router.get("/roles", tags=["security roles"], response_model=list[RoleOut])
async def list_roles(ctx: CtxDep) -> list[RoleOut]:
    """List security roles.

    Every role by name, with its privileges per entity."""
    async with ctx.read() as conn:
        return [RoleOut.model_validate(r) for r in await roles.every(conn)]


@router.get("/roles/{role_id}", **ROLE)
async def get_role(ctx: CtxDep, role_id: PathId) -> RoleOut:
    """Read a security role.

    404 when there is none."""
    async with ctx.read() as conn:
        return RoleOut.model_validate(await roles.get(conn, role_id))


@router.post("/roles", status_code=201, **ROLE)
async def create_role(ctx: CtxDep, body: RoleIn) -> RoleOut:
    """Create a security role.

    Names are unique (409); privileges name known entities or '*' (422)."""
    role_id = new_id(body.id)
    async with ctx.tx() as conn:
        row = await roles.create(conn, role_id, body.model_dump(include=set(roles.FIELDS)))
        await ctx.emitter.role(conn, role_id)
    return RoleOut.model_validate(row)


@router.patch("/roles/{role_id}", **ROLE)
async def update_role(ctx: CtxDep, role_id: PathId, body: RolePatch) -> RoleOut:
    """Change a security role.

    Only the fields sent change; the holders' sign-ins that the change no longer allows are revoked."""
    async with ctx.tx() as conn:
        row = await roles.update(conn, role_id, {k: getattr(body, k) for k in body.model_fields_set})
        if not row["is_admin"]:
            await ensure_an_admin_remains(conn)
        await ctx.emitter.role(conn, role_id)
    return RoleOut.model_validate(row)


@router.delete("/roles/{role_id}", **NO_CONTENT, tags=["security roles"])
async def delete_role(ctx: CtxDep, role_id: PathId) -> Response:
    """Delete a security role.

    Never the System Administrator role, nor one whose loss leaves no enabled administrator (409)."""
    async with ctx.tx() as conn:
        cur, holders, holding_teams = await roles.delete(conn, role_id)
        await ensure_an_admin_remains(conn)
        await ctx.emitter.emit(conn, RoleChanged(id=role_id, name=cur["name"], deleted=True))
        for uid in holders:
            await ctx.emitter.user(conn, uid)
        for tid in holding_teams:
            await ctx.emitter.team(conn, tid)
    return Response(status_code=204)


# --- entity metadata --------------------------------------------------------------------------

ENTITY: dict[str, Any] = {"tags": ["entities"], "response_model": EntityOut}


def _attributes_json(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v.model_dump(exclude_none=True) for k, v in attrs.items()}


@router.get("/entities", tags=["entities"], response_model=list[EntityOut])
async def list_entities(ctx: CtxDep) -> list[EntityOut]:
    """List entities.

    Every entity's metadata by logical name: ownership, attributes, offline switches, conflict policy."""
    async with ctx.read() as conn:
        return [EntityOut.model_validate(r) for r in await entities.every(conn)]


@router.get("/entities/{name}", **ENTITY)
async def get_entity(ctx: CtxDep, name: PathName) -> EntityOut:
    """Read an entity's metadata.

    404 when unknown."""
    async with ctx.read() as conn:
        return EntityOut.model_validate(await entities.get(conn, name))


@router.post("/entities", status_code=201, **ENTITY)
async def create_entity(ctx: CtxDep, body: EntityIn) -> EntityOut:
    """Create an entity.

    Lookup attributes target known entities (or user, team, businessunit); 409 when the name is taken."""
    row = {**body.model_dump(), "attributes": _attributes_json(body.attributes)}
    async with ctx.tx() as conn:
        await entities.create(conn, row)
        await ctx.emitter.entity(conn, body.logical_name)
        return EntityOut.model_validate(await entities.get(conn, body.logical_name))


@router.patch("/entities/{name}", **ENTITY)
async def update_entity(ctx: CtxDep, name: PathName, body: EntityPatch) -> EntityOut:
    """Change an entity: display name, offline switch, conflict policy, new attributes.

    Attributes are added, never retyped (409). Enabling for offline needs an offline-capable entity (422);
    disabling one that profiles use is refused, naming them (409)."""
    changes = {
        k: getattr(body, k) for k in body.model_fields_set & {"display_name", "offline_enabled", "conflict_policy"}
    }
    added = _attributes_json(body.attributes) if body.attributes else {}
    async with ctx.tx() as conn:
        await entities.update(conn, name, changes, added)
        await ctx.emitter.entity(conn, name)
        return EntityOut.model_validate(await entities.get(conn, name))


# --- org settings -----------------------------------------------------------------------------


@router.get("/org-settings", tags=["org settings"], response_model=OrgSettingsOut)
async def get_org_settings(ctx: CtxDep) -> OrgSettingsOut:
    """Read the organization's settings.

    Conflict detection (false: client wins, true: server wins) and the records-per-user cap."""
    async with ctx.read() as conn:
        return OrgSettingsOut.model_validate(await org_settings.get(conn))


@router.patch("/org-settings", tags=["org settings"], response_model=OrgSettingsOut)
async def update_org_settings(ctx: CtxDep, body: OrgSettingsPatch) -> OrgSettingsOut:
    """Change the organization's settings.

    Only the fields sent change; conflict-service applies the next batch under the new setting."""
    async with ctx.tx() as conn:
        return OrgSettingsOut.model_validate(
            await org_settings.update(conn, body.conflict_detection, body.max_records_per_user)
        )
