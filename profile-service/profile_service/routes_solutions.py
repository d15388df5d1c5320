"""Solution export/import: profiles plus the metadata of the entities they use, as one JSON file.
Import checks everything before writing anything and leaves imported profiles to be published."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from offsync_shared.errors import ValidationFailed
from profile_service import entities as entities_store
from profile_service import profiles as store
from profile_service import solutions
from profile_service.context import CtxDep, new_id
from profile_service.responses import ImportResultOut, SolutionOut
from profile_service.schemas import ID_PATTERN, SolutionIn

router = APIRouter(prefix="/v1/solutions", tags=["solutions"])

ProfileIds = Annotated[
    list[Annotated[str, Query(pattern=ID_PATTERN)]] | None, Query(alias="profile_id", max_length=200)
]


@router.get(
    "/export",
    response_model=SolutionOut,
    summary="Export profiles as a solution file",
    description=(
        "The given profiles (all when none given) with the metadata of the entities they use and, "
        "transitively, of those their lookups target, as one JSON document POST /v1/solutions/import takes."
    ),
)
async def export_solution(ctx: CtxDep, profile_ids: ProfileIds = None) -> SolutionOut:
    async with ctx.read() as conn:
        if profile_ids:
            ids = list(dict.fromkeys(profile_ids))
            found = set(await store.ids(conn, ids))
            missing = [i for i in ids if i not in found]
            if missing:
                raise ValidationFailed(f"unknown profile(s): {', '.join(missing)}", field="profile_id")
        else:
            ids = await store.ids(conn)
        profiles = []
        used: set[str] = set()
        for pid in ids:
            p = await store.load_profile(conn, pid)
            items = [
                {k: i[k] for k in ("entity", "filter", "relationships", "sync_interval_minutes")} for i in p["items"]
            ]
            used.update(i["entity"] for i in items)
            profiles.append({"name": p["name"], "description": p["description"], "items": items})
        every = {r["logical_name"]: r for r in await entities_store.every(conn)}
    entities = [
        {k: v for k, v in every[n].items() if v is not None} for n in solutions.with_lookup_targets(used, every)
    ]
    return SolutionOut.model_validate(
        {"format": "offsync-solution", "version": 1, "entities": entities, "profiles": profiles}
    )


@router.post(
    "/import",
    response_model=ImportResultOut,
    summary="Import a solution file",
    description=(
        "Checks everything before writing anything (422 with every problem): entity metadata merges into "
        "this org's (attributes added, never retyped), and each profile's draft is created or replaced by "
        "name. Imported profiles are left to be published."
    ),
)
async def import_solution(ctx: CtxDep, body: SolutionIn) -> ImportResultOut:
    parsed = solutions.parse(body)
    async with ctx.tx() as conn:
        # One import at a time: the checks below must still hold when the writes happen.
        await store.lock_imports(conn)
        metas = await store.load_metas(conn)
        current = {r["logical_name"]: r for r in await entities_store.every(conn)}
        todo = solutions.plan(parsed, current, metas)
        for row in todo.entity_rows:
            await entities_store.upsert(conn, row)
            await ctx.emitter.entity(conn, row["logical_name"])
        result = []
        for head, items in todo.profiles:
            pid, created = await store.replace_draft(conn, head.name, head.description, items, new_id(None))
            result.append({"id": pid, "name": head.name, "created": created})
    return ImportResultOut.model_validate(
        {"entities": [r["logical_name"] for r in todo.entity_rows], "profiles": result}
    )
