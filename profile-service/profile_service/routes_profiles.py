"""Admin routes of mobile offline profiles (draft edits with ETag/If-Match, items, people,
validate, publish, versions, clone) and of app modules that attach profiles."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Path, Query, Response

from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from offsync_shared.events.admin import ProfileDeleted
from profile_service import profiles as store
from profile_service import rows
from profile_service.context import CtxDep, new_id
from profile_service.schemas import (
    AppModuleIn,
    AppModulePatch,
    CloneIn,
    ItemIn,
    ItemPatch,
    PathId,
    PathName,
    ProfileIn,
    ProfilePatch,
    UsersIn,
)
from profile_service.versions import diff

router = APIRouter(prefix="/v1")

IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200, description="ETag from a previous read")]


async def _reply(conn: asyncpg.Connection, response: Response, profile_id: str) -> dict[str, Any]:
    out = await store.load_profile(conn, profile_id)
    response.headers["ETag"] = store.etag(out["row_version"])
    return out


async def _name_free(conn: asyncpg.Connection, name: str, profile_id: str | None = None) -> None:
    other = await conn.fetchval("SELECT id FROM admin.profiles WHERE name = $1", name)
    if other is not None and other != profile_id:
        raise Conflict(f"a profile named {name!r} already exists", field="name")


@router.get("/profiles", tags=["profiles"])
async def list_profiles(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        rows = await conn.fetch(
            f"""SELECT {store.PROFILE_COLS},
                 (SELECT count(*) FROM admin.profile_items i WHERE i.profile_id = p.id) AS item_count,
                 (SELECT count(*) FROM admin.profile_users u WHERE u.profile_id = p.id) AS user_count
               FROM admin.profiles p ORDER BY name"""
        )
    return [dict(r) for r in rows]


@router.post("/profiles", status_code=201, tags=["profiles"])
async def create_profile(ctx: CtxDep, body: ProfileIn, response: Response) -> dict[str, Any]:
    pid = new_id(body.id)
    async with ctx.tx() as conn:
        await _name_free(conn, body.name)
        ok = await conn.fetchval(
            "INSERT INTO admin.profiles(id, name, description) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
            pid,
            body.name,
            body.description,
        )
        if not ok:
            raise Conflict(f"profile {pid!r} already exists", field="id")
        return await _reply(conn, response, pid)


@router.get("/profiles/{profile_id}", tags=["profiles"])
async def get_profile(ctx: CtxDep, profile_id: PathId, response: Response) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await _reply(conn, response, profile_id)


@router.patch("/profiles/{profile_id}", tags=["profiles"])
async def update_profile(
    ctx: CtxDep, profile_id: PathId, body: ProfilePatch, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await store.lock_profile(conn, profile_id, if_match)
        if body.name is not None:
            await _name_free(conn, body.name, profile_id)
        await conn.execute(
            "UPDATE admin.profiles SET name = $2, description = $3 WHERE id = $1",
            profile_id,
            body.name if body.name is not None else cur["name"],
            body.description if body.description is not None else cur["description"],
        )
        await store.mark_changed(conn, profile_id)
        return await _reply(conn, response, profile_id)


@router.delete("/profiles/{profile_id}", status_code=204, tags=["profiles"])
async def delete_profile(ctx: CtxDep, profile_id: PathId, if_match: IfMatch = None) -> Response:
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        await conn.execute("DELETE FROM admin.published_profile_users WHERE profile_id = $1", profile_id)
        await conn.execute("DELETE FROM admin.profile_versions WHERE profile_id = $1", profile_id)
        await conn.execute("DELETE FROM admin.profiles WHERE id = $1", profile_id)
        await ctx.emitter.emit(conn, ProfileDeleted(profile_id=profile_id))
    return Response(status_code=204)


# --- items ------------------------------------------------------------------------------------


async def _save_items(conn: asyncpg.Connection, profile_id: str, items: list[dict[str, Any]], changed: str) -> None:
    normalized, problems = await store.check_items_in_db(conn, items)
    store.raise_problems(problems, only_entity=changed)
    new = next(i for i in normalized if i["entity"] == changed)
    await conn.execute(
        """INSERT INTO admin.profile_items(profile_id, entity, filter, relationships, sync_interval_minutes)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (profile_id, entity) DO UPDATE
           SET filter = EXCLUDED.filter, relationships = EXCLUDED.relationships, sync_interval_minutes = EXCLUDED.sync_interval_minutes""",
        profile_id,
        changed,
        new["filter"],
        new["relationships"],
        new["sync_interval_minutes"],
    )
    await store.mark_changed(conn, profile_id)


@router.post("/profiles/{profile_id}/items", status_code=201, tags=["profiles"])
async def add_item(
    ctx: CtxDep, profile_id: PathId, body: ItemIn, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        items = await store.load_items(conn, profile_id)
        if any(i["entity"] == body.entity for i in items):
            raise Conflict(f"{body.entity} is already in the profile; update its item instead", field="entity")
        await _save_items(conn, profile_id, [*items, body.model_dump()], body.entity)
        return await _reply(conn, response, profile_id)


@router.patch("/profiles/{profile_id}/items/{entity}", tags=["profiles"])
async def update_item(
    ctx: CtxDep, profile_id: PathId, entity: PathName, body: ItemPatch, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        items = await store.load_items(conn, profile_id)
        cur = next((i for i in items if i["entity"] == entity), None)
        if cur is None:
            raise NotFound(f"{entity} is not in profile {profile_id!r}")
        for k in body.model_fields_set:
            v = getattr(body, k)
            if v is None:
                raise ValidationFailed(f"{k} cannot be null", field=k)
            cur[k] = v
        await _save_items(conn, profile_id, items, entity)
        return await _reply(conn, response, profile_id)


@router.delete("/profiles/{profile_id}/items/{entity}", tags=["profiles"])
async def remove_item(
    ctx: CtxDep, profile_id: PathId, entity: PathName, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        items = await store.load_items(conn, profile_id)
        if not any(i["entity"] == entity for i in items):
            raise NotFound(f"{entity} is not in profile {profile_id!r}")
        dependents = sorted(i["entity"] for i in items if any(r.get("entity") == entity for r in i["relationships"]))
        if dependents:
            raise Conflict(
                f"{', '.join(dependents)} relate(s) to {entity}; remove those relationships first",
                field="entity",
                details={"items": dependents},
            )
        await conn.execute("DELETE FROM admin.profile_items WHERE profile_id = $1 AND entity = $2", profile_id, entity)
        await store.mark_changed(conn, profile_id)
        return await _reply(conn, response, profile_id)


# --- people -----------------------------------------------------------------------------------


@router.post("/profiles/{profile_id}/users", tags=["profiles"])
async def add_users(
    ctx: CtxDep, profile_id: PathId, body: UsersIn, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        await store.add_users(conn, profile_id, list(dict.fromkeys(body.user_ids)))
        await store.mark_changed(conn, profile_id)
        return await _reply(conn, response, profile_id)


@router.delete("/profiles/{profile_id}/users/{user_id}", tags=["profiles"])
async def remove_user(
    ctx: CtxDep, profile_id: PathId, user_id: PathId, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        if (
            await conn.execute(
                "DELETE FROM admin.profile_users WHERE profile_id = $1 AND user_id = $2", profile_id, user_id
            )
            == "DELETE 0"
        ):
            raise NotFound(f"user {user_id!r} is not in profile {profile_id!r}")
        await store.mark_changed(conn, profile_id)
        return await _reply(conn, response, profile_id)


# --- validate / publish / versions / clone ------------------------------------------------------


@router.post("/profiles/{profile_id}/validate", tags=["profiles"])
async def validate_profile(ctx: CtxDep, profile_id: PathId) -> dict[str, Any]:
    async with ctx.read() as conn:
        if not await conn.fetchval("SELECT 1 FROM admin.profiles WHERE id = $1", profile_id):
            raise NotFound(f"profile {profile_id!r} not found")
        return await store.validate(conn, profile_id)


@router.post("/profiles/{profile_id}/publish", tags=["profiles"])
async def publish_profile(
    ctx: CtxDep, profile_id: PathId, response: Response, if_match: IfMatch = None
) -> dict[str, Any]:
    async with ctx.tx() as conn:
        result = await store.publish(conn, ctx.emitter, profile_id, if_match, ctx.admin.user_id)
        profile = await _reply(conn, response, profile_id)
    return {**profile, "published": result}


@router.get("/profiles/{profile_id}/versions", tags=["profiles"])
async def list_versions(ctx: CtxDep, profile_id: PathId) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        if not await conn.fetchval("SELECT 1 FROM admin.profiles WHERE id = $1", profile_id):
            raise NotFound(f"profile {profile_id!r} not found")
        rows = await conn.fetch(
            "SELECT version, published_at, published_by FROM admin.profile_versions WHERE profile_id = $1 ORDER BY version",
            profile_id,
        )
    return [dict(r) for r in rows]


async def _snapshot(conn: asyncpg.Connection, profile_id: str, version: int) -> dict[str, Any]:
    snap = await conn.fetchval(
        "SELECT snapshot FROM admin.profile_versions WHERE profile_id = $1 AND version = $2", profile_id, version
    )
    if snap is None:
        raise NotFound(f"profile {profile_id!r} has no published version {version}")
    return snap


Version = Annotated[int, Query(ge=1, le=2_147_483_647)]


@router.get("/profiles/{profile_id}/versions/diff", tags=["profiles"])
async def diff_versions(
    ctx: CtxDep,
    profile_id: PathId,
    from_version: Annotated[int, Query(alias="from", ge=1, le=2_147_483_647)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=2_147_483_647)],
) -> dict[str, Any]:
    async with ctx.read() as conn:
        a = await _snapshot(conn, profile_id, from_version)
        b = await _snapshot(conn, profile_id, to_version)
    return {"from": from_version, "to": to_version, **diff(a, b)}


@router.get("/profiles/{profile_id}/versions/{version}", tags=["profiles"])
async def get_version(
    ctx: CtxDep, profile_id: PathId, version: Annotated[int, Path(ge=1, le=2_147_483_647)]
) -> dict[str, Any]:
    async with ctx.read() as conn:
        return {"profile_id": profile_id, "version": version, "snapshot": await _snapshot(conn, profile_id, version)}


@router.post("/profiles/{profile_id}/clone", status_code=201, tags=["profiles"])
async def clone_profile(ctx: CtxDep, profile_id: PathId, body: CloneIn, response: Response) -> dict[str, Any]:
    """Copy name/description/items into a new draft profile. People are not copied: a user has one profile."""
    async with ctx.tx() as conn:
        src = await store.load_profile(conn, profile_id)
        await _name_free(conn, body.name)
        new = new_id(None)
        await conn.execute(
            "INSERT INTO admin.profiles(id, name, description) VALUES ($1, $2, $3)",
            new,
            body.name,
            body.description if body.description is not None else src["description"],
        )
        await conn.executemany(
            """INSERT INTO admin.profile_items(profile_id, entity, filter, relationships, sync_interval_minutes)
               VALUES ($1, $2, $3, $4, $5)""",
            [(new, i["entity"], i["filter"], i["relationships"], i["sync_interval_minutes"]) for i in src["items"]],
        )
        return await _reply(conn, response, new)


# --- app modules ------------------------------------------------------------------------------

APP_SQL = """SELECT a.id, a.name, a.offline_enabled,
  COALESCE((SELECT array_agg(profile_id ORDER BY profile_id) FROM admin.app_module_profiles WHERE app_module_id = a.id), '{}') AS profile_ids
FROM admin.app_modules a"""


async def _app(conn: asyncpg.Connection, app_id: str) -> dict[str, Any]:
    return await rows.one(conn, f"{APP_SQL} WHERE a.id = $1", app_id, "app module")


@router.get("/app-modules", tags=["app modules"])
async def list_app_modules(ctx: CtxDep) -> list[dict[str, Any]]:
    async with ctx.read() as conn:
        return await rows.every(conn, f"{APP_SQL} ORDER BY a.name")


@router.post("/app-modules", status_code=201, tags=["app modules"])
async def create_app_module(ctx: CtxDep, body: AppModuleIn) -> dict[str, Any]:
    aid = new_id(body.id)
    async with ctx.tx() as conn:
        if await conn.fetchval("SELECT 1 FROM admin.app_modules WHERE name = $1", body.name):
            raise Conflict(f"an app module named {body.name!r} already exists", field="name")
        if not await conn.fetchval(
            "INSERT INTO admin.app_modules(id, name, offline_enabled) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
            aid,
            body.name,
            body.offline_enabled,
        ):
            raise Conflict(f"app module {aid!r} already exists", field="id")
        return await _app(conn, aid)


@router.get("/app-modules/{app_id}", tags=["app modules"])
async def get_app_module(ctx: CtxDep, app_id: PathId) -> dict[str, Any]:
    async with ctx.read() as conn:
        return await _app(conn, app_id)


@router.patch("/app-modules/{app_id}", tags=["app modules"])
async def update_app_module(ctx: CtxDep, app_id: PathId, body: AppModulePatch) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await _app(conn, app_id)
        if body.name is not None and body.name != cur["name"]:
            if await conn.fetchval("SELECT 1 FROM admin.app_modules WHERE name = $1", body.name):
                raise Conflict(f"an app module named {body.name!r} already exists", field="name")
        await conn.execute(
            "UPDATE admin.app_modules SET name = $2, offline_enabled = $3 WHERE id = $1",
            app_id,
            body.name if body.name is not None else cur["name"],
            body.offline_enabled if body.offline_enabled is not None else cur["offline_enabled"],
        )
        return await _app(conn, app_id)


@router.delete("/app-modules/{app_id}", status_code=204, tags=["app modules"])
async def delete_app_module(ctx: CtxDep, app_id: PathId) -> Response:
    async with ctx.tx() as conn:
        if await conn.execute("DELETE FROM admin.app_modules WHERE id = $1", app_id) == "DELETE 0":
            raise NotFound(f"app module {app_id!r} not found")
    return Response(status_code=204)


@router.put("/app-modules/{app_id}/profiles/{profile_id}", tags=["app modules"])
async def attach_profile(ctx: CtxDep, app_id: PathId, profile_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        cur = await _app(conn, app_id)
        if not await conn.fetchval("SELECT 1 FROM admin.profiles WHERE id = $1", profile_id):
            raise NotFound(f"profile {profile_id!r} not found")
        if not cur["offline_enabled"]:
            raise ValidationFailed(
                f"enable mobile offline on app module {cur['name']!r} before attaching profiles",
                field="offline_enabled",
            )
        await conn.execute(
            "INSERT INTO admin.app_module_profiles(app_module_id, profile_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            app_id,
            profile_id,
        )
        return await _app(conn, app_id)


@router.delete("/app-modules/{app_id}/profiles/{profile_id}", tags=["app modules"])
async def detach_profile(ctx: CtxDep, app_id: PathId, profile_id: PathId) -> dict[str, Any]:
    async with ctx.tx() as conn:
        await _app(conn, app_id)
        if (
            await conn.execute(
                "DELETE FROM admin.app_module_profiles WHERE app_module_id = $1 AND profile_id = $2", app_id, profile_id
            )
            == "DELETE 0"
        ):
            raise NotFound(f"profile {profile_id!r} is not attached to app module {app_id!r}")
        return await _app(conn, app_id)
