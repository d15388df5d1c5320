"""Admin routes of mobile offline profiles (draft edits with ETag/If-Match, items, people,
validate, publish, versions, clone) and of app modules that attach profiles. The SQL lives in
``profiles`` and ``app_modules``; the routes check, call and answer."""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Path, Query, Response

from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from offsync_shared.events.admin import ProfileDeleted
from profile_service import app_modules, publishing
from profile_service import profiles as store
from profile_service.context import CtxDep, new_id
from profile_service.documented_route import DocumentedRoute
from profile_service.responses import (
    AppModuleOut,
    ProfileOut,
    ProfileSummaryOut,
    PublishedProfileOut,
    PublishResultOut,
    ValidationReportOut,
    VersionDiffOut,
    VersionOut,
    VersionSnapshotOut,
)
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

router = APIRouter(prefix="/v1", route_class=DocumentedRoute)

IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200, description="ETag from a previous read")]
# Every answer with the whole profile carries its ETag (send it back as If-Match; a stale one is a 412).
PROFILE: dict[str, Any] = {"tags": ["profiles"], "response_model": ProfileOut}


async def _reply(conn: asyncpg.Connection, response: Response, profile_id: str) -> ProfileOut:
    out = ProfileOut.model_validate(await store.load_profile(conn, profile_id))
    response.headers["ETag"] = store.etag(out.row_version)
    return out


@router.get("/profiles", tags=["profiles"], response_model=list[ProfileSummaryOut])
async def list_profiles(ctx: CtxDep) -> list[ProfileSummaryOut]:
    """List mobile offline profiles.

    Every profile by name, with its item and user counts and whether its draft is unpublished."""
    async with ctx.read() as conn:
        return [ProfileSummaryOut.model_validate(r) for r in await store.summaries(conn)]


@router.post("/profiles", status_code=201, **PROFILE)
async def create_profile(ctx: CtxDep, body: ProfileIn, response: Response) -> ProfileOut:
    """Create a mobile offline profile.

    An empty draft; names are unique (409). Answers the profile with its ETag."""
    pid = new_id(body.id)
    async with ctx.tx() as conn:
        await store.create(conn, pid, body.name, body.description)
        return await _reply(conn, response, pid)


@router.get("/profiles/{profile_id}", **PROFILE)
async def get_profile(ctx: CtxDep, profile_id: PathId, response: Response) -> ProfileOut:
    """Read a profile's draft.

    Items, users and app modules, with the ETag to send as If-Match when changing it."""
    async with ctx.read() as conn:
        return await _reply(conn, response, profile_id)


@router.patch("/profiles/{profile_id}", **PROFILE)
async def update_profile(
    ctx: CtxDep, profile_id: PathId, body: ProfilePatch, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Rename or describe a profile.

    Names are unique (409). Answers the profile with its ETag; a stale If-Match is refused (412)."""
    async with ctx.tx() as conn:
        cur = await store.lock_profile(conn, profile_id, if_match)
        await store.update_head(conn, cur, body.name, body.description)
        return await _reply(conn, response, profile_id)


@router.delete("/profiles/{profile_id}", status_code=204, response_class=Response, tags=["profiles"])
async def delete_profile(ctx: CtxDep, profile_id: PathId, if_match: IfMatch = None) -> Response:
    """Delete a profile.

    With its published versions; its users get no offline data until they join another profile."""
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        await store.delete(conn, profile_id)
        await ctx.emitter.emit(conn, ProfileDeleted(profile_id=profile_id))
    return Response(status_code=204)


# --- items ------------------------------------------------------------------------------------


@router.post("/profiles/{profile_id}/items", status_code=201, **PROFILE)
async def add_item(
    ctx: CtxDep, profile_id: PathId, body: ItemIn, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Add an entity to a profile.

    With its download filter, relationships and sync interval, checked against the entity's metadata (422 with
    every problem and its code; docs/admin-api.md). Answers the profile with its ETag; a stale If-Match is
    refused (412)."""
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        items = await store.load_items(conn, profile_id)
        if any(i["entity"] == body.entity for i in items):
            raise Conflict(f"{body.entity} is already in the profile; update its item instead", field="entity")
        await store.save_item(conn, profile_id, [*items, body.model_dump()], body.entity)
        return await _reply(conn, response, profile_id)


@router.patch("/profiles/{profile_id}/items/{entity}", **PROFILE)
async def update_item(
    ctx: CtxDep, profile_id: PathId, entity: PathName, body: ItemPatch, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Change a profile item.

    Only the fields sent change; checked as when added. Answers the profile with its ETag; a stale If-Match is
    refused (412)."""
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
        await store.save_item(conn, profile_id, items, entity)
        return await _reply(conn, response, profile_id)


@router.delete("/profiles/{profile_id}/items/{entity}", **PROFILE)
async def remove_item(
    ctx: CtxDep, profile_id: PathId, entity: PathName, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Remove an entity from a profile.

    Refused while another item relates to it (409 naming them). Answers the profile with its ETag; a stale If-
    Match is refused (412)."""
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        await store.remove_item(conn, profile_id, entity)
        return await _reply(conn, response, profile_id)


# --- people -----------------------------------------------------------------------------------


@router.post("/profiles/{profile_id}/users", **PROFILE)
async def add_users(
    ctx: CtxDep, profile_id: PathId, body: UsersIn, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Add users to a profile.

    A user is in one profile only: one already in another is refused (409 naming it). Answers the profile with
    its ETag; a stale If-Match is refused (412)."""
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        await store.add_users(conn, profile_id, list(dict.fromkeys(body.user_ids)))
        await store.mark_changed(conn, profile_id)
        return await _reply(conn, response, profile_id)


@router.delete("/profiles/{profile_id}/users/{user_id}", **PROFILE)
async def remove_user(
    ctx: CtxDep, profile_id: PathId, user_id: PathId, response: Response, if_match: IfMatch = None
) -> ProfileOut:
    """Remove a user from a profile.

    404 when the user is not in it. Answers the profile with its ETag; a stale If-Match is refused (412)."""
    async with ctx.tx() as conn:
        await store.lock_profile(conn, profile_id, if_match)
        await store.remove_user(conn, profile_id, user_id)
        return await _reply(conn, response, profile_id)


# --- validate / publish / versions / clone ------------------------------------------------------


@router.post(
    "/profiles/{profile_id}/validate",
    tags=["profiles"],
    response_model=ValidationReportOut,
    response_model_exclude_unset=True,
)
async def validate_profile(ctx: CtxDep, profile_id: PathId) -> ValidationReportOut:
    """Check a profile's draft.

    Every problem at once (errors block publishing, warnings do not) and, when records exist, how many records
    each user would carry against the records-per-user cap. Changes nothing."""
    async with ctx.read() as conn:
        await store.must_exist(conn, profile_id)
        return ValidationReportOut.model_validate(await publishing.validate(conn, profile_id))


@router.post(
    "/profiles/{profile_id}/publish",
    tags=["profiles"],
    response_model=PublishedProfileOut,
    response_model_exclude_unset=True,
)
async def publish_profile(
    ctx: CtxDep, profile_id: PathId, response: Response, if_match: IfMatch = None
) -> PublishedProfileOut:
    """Publish a profile's draft.

    Validates, then makes the draft the next published version: its users' devices pick it up. A draft with
    errors is refused (422 with every problem). Answers the profile with its ETag; a stale If-Match is refused
    (412)."""
    async with ctx.tx() as conn:
        result = await publishing.publish(conn, ctx.emitter, profile_id, if_match, ctx.admin.user_id)
        profile = await _reply(conn, response, profile_id)
    return PublishedProfileOut(**dict(profile), published=PublishResultOut.model_validate(result))


@router.get("/profiles/{profile_id}/versions", tags=["profiles"], response_model=list[VersionOut])
async def list_versions(ctx: CtxDep, profile_id: PathId) -> list[VersionOut]:
    """List a profile's published versions.

    Oldest first: when and by whom each was published."""
    async with ctx.read() as conn:
        return [VersionOut.model_validate(r) for r in await store.versions(conn, profile_id)]


@router.get(
    "/profiles/{profile_id}/versions/diff",
    tags=["profiles"],
    response_model=VersionDiffOut,
    response_model_exclude_unset=True,
)
async def diff_versions(
    ctx: CtxDep,
    profile_id: PathId,
    from_version: Annotated[int, Query(alias="from", ge=1, le=2_147_483_647)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=2_147_483_647)],
) -> VersionDiffOut:
    """Compare two published versions.

    Items added, removed and changed (with each changed setting from → to), users added and removed."""
    async with ctx.read() as conn:
        a = await store.snapshot(conn, profile_id, from_version)
        b = await store.snapshot(conn, profile_id, to_version)
    return VersionDiffOut.model_validate({"from": from_version, "to": to_version, **diff(a, b)})


@router.get("/profiles/{profile_id}/versions/{version}", tags=["profiles"], response_model=VersionSnapshotOut)
async def get_version(
    ctx: CtxDep, profile_id: PathId, version: Annotated[int, Path(ge=1, le=2_147_483_647)]
) -> VersionSnapshotOut:
    """Read a published version.

    The profile as it was published in that version."""
    async with ctx.read() as conn:
        return VersionSnapshotOut.model_validate(
            {
                "profile_id": profile_id,
                "version": version,
                "snapshot": await store.snapshot(conn, profile_id, version),
            }
        )


@router.post("/profiles/{profile_id}/clone", status_code=201, **PROFILE)
async def clone_profile(ctx: CtxDep, profile_id: PathId, body: CloneIn, response: Response) -> ProfileOut:
    """Clone a profile.

    Copies name, description and items into a new draft. People are not copied: a user has one profile."""
    async with ctx.tx() as conn:
        new = new_id(None)
        await store.clone(conn, profile_id, new, body.name, body.description)
        return await _reply(conn, response, new)


# --- app modules ------------------------------------------------------------------------------

APP: dict[str, Any] = {"tags": ["app modules"], "response_model": AppModuleOut}


@router.get("/app-modules", tags=["app modules"], response_model=list[AppModuleOut])
async def list_app_modules(ctx: CtxDep) -> list[AppModuleOut]:
    """List app modules.

    Every app module by name, with the profiles attached."""
    async with ctx.read() as conn:
        return [AppModuleOut.model_validate(r) for r in await app_modules.every(conn)]


@router.post("/app-modules", status_code=201, **APP)
async def create_app_module(ctx: CtxDep, body: AppModuleIn) -> AppModuleOut:
    """Create an app module.

    Names are unique (409)."""
    aid = new_id(body.id)
    async with ctx.tx() as conn:
        await app_modules.create(conn, aid, body.name, body.offline_enabled)
        return AppModuleOut.model_validate(await app_modules.get(conn, aid))


@router.get("/app-modules/{app_id}", **APP)
async def get_app_module(ctx: CtxDep, app_id: PathId) -> AppModuleOut:
    """Read an app module.

    404 when there is none."""
    async with ctx.read() as conn:
        return AppModuleOut.model_validate(await app_modules.get(conn, app_id))


@router.patch("/app-modules/{app_id}", **APP)
async def update_app_module(ctx: CtxDep, app_id: PathId, body: AppModulePatch) -> AppModuleOut:
    """Rename an app module or switch mobile offline.

    Only the fields sent change; names are unique (409)."""
    async with ctx.tx() as conn:
        await app_modules.update(conn, app_id, body.name, body.offline_enabled)
        return AppModuleOut.model_validate(await app_modules.get(conn, app_id))


@router.delete("/app-modules/{app_id}", status_code=204, response_class=Response, tags=["app modules"])
async def delete_app_module(ctx: CtxDep, app_id: PathId) -> Response:
    """Delete an app module.

    The profiles attached stay."""
    async with ctx.tx() as conn:
        await app_modules.delete(conn, app_id)
    return Response(status_code=204)


@router.put("/app-modules/{app_id}/profiles/{profile_id}", **APP)
async def attach_profile(ctx: CtxDep, app_id: PathId, profile_id: PathId) -> AppModuleOut:
    """Attach a profile to an app module.

    The module must be enabled for mobile offline (422). Idempotent."""
    async with ctx.tx() as conn:
        await app_modules.attach(conn, app_id, profile_id)
        return AppModuleOut.model_validate(await app_modules.get(conn, app_id))


@router.delete("/app-modules/{app_id}/profiles/{profile_id}", **APP)
async def detach_profile(ctx: CtxDep, app_id: PathId, profile_id: PathId) -> AppModuleOut:
    """Detach a profile from an app module.

    404 when it is not attached."""
    async with ctx.tx() as conn:
        await app_modules.detach(conn, app_id, profile_id)
        return AppModuleOut.model_validate(await app_modules.get(conn, app_id))
