"""Solution export/import: profiles plus the metadata of the entities they use, as one JSON file.
Import checks everything before writing anything and leaves imported profiles to be published."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ValidationError

from offsync_shared.errors import ValidationFailed
from profile_service import entities as entities_store
from profile_service import profiles as store
from profile_service import validation
from profile_service.context import CtxDep, new_id
from profile_service.responses import ImportResultOut, SolutionOut
from profile_service.schemas import ID_PATTERN, EntityIn, ItemIn, ProfileIn, SolutionIn

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
    # Lookup targets come along (transitively) so the metadata imports into an org lacking them.
    todo = sorted(used)
    while todo:
        name = todo.pop()
        for spec in every[name]["attributes"].values() if name in every else ():
            target = spec.get("target")
            if spec.get("type") == "lookup" and target in every and target not in used:
                used.add(target)
                todo.append(target)
    entities = [{k: v for k, v in dict(every[n]).items() if v is not None} for n in sorted(used) if n in every]
    return SolutionOut.model_validate(
        {"format": "offsync-solution", "version": 1, "entities": entities, "profiles": profiles}
    )


def _pydantic_problems(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"code": "invalid", "message": e["msg"], "field": f"{where}." + ".".join(str(x) for x in e["loc"])}
        for e in exc.errors()[:20]
    ]


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
    problems: list[dict[str, Any]] = []
    entities: list[EntityIn] = []
    for i, raw in enumerate(body.entities):
        try:
            entities.append(EntityIn.model_validate(raw))
        except ValidationError as exc:
            problems += _pydantic_problems(exc, f"entities[{i}]")
    profiles: list[tuple[ProfileIn, list[dict[str, Any]]]] = []
    for i, raw in enumerate(body.profiles):
        try:
            head = ProfileIn.model_validate({k: v for k, v in raw.items() if k in ("name", "description")})
            if set(raw) - {"name", "description", "items"}:
                raise ValidationFailed("unexpected profile fields")
            items_raw = raw.get("items", [])
            if not isinstance(items_raw, list) or len(items_raw) > 200:
                problems.append(
                    {
                        "code": "invalid",
                        "message": "items must be a list (at most 200)",
                        "field": f"profiles[{i}].items",
                    }
                )
                continue
            items = [ItemIn.model_validate(it).model_dump() for it in items_raw]
            profiles.append((head, items))
        except ValidationError as exc:
            problems += _pydantic_problems(exc, f"profiles[{i}]")
        except ValidationFailed as exc:
            problems.append({"code": "invalid", "message": exc.message, "field": f"profiles[{i}]"})
    names = [p.name for p, _ in profiles]
    for n in {n for n in names if names.count(n) > 1}:
        problems.append({"code": "duplicate_profile", "message": f"profile {n!r} appears twice", "field": "profiles"})
    ent_names = [e.logical_name for e in entities]
    for n in {n for n in ent_names if ent_names.count(n) > 1}:
        problems.append({"code": "duplicate_entity", "message": f"entity {n!r} appears twice", "field": "entities"})
    if problems:
        raise ValidationFailed(problems[0]["message"], field=problems[0].get("field"), details={"problems": problems})

    async with ctx.tx() as conn:
        # One import at a time: the checks below must still hold when the writes happen.
        await store.lock_imports(conn)
        metas = await store.load_metas(conn)
        current = {r["logical_name"]: r for r in await entities_store.every(conn)}
        entity_rows: list[dict[str, Any]] = []
        for e in entities:
            attrs = {k: v.model_dump(exclude_none=True) for k, v in e.attributes.items()}
            cur = current.get(e.logical_name)
            if cur is not None:
                if cur["ownership"] != e.ownership:
                    problems.append(
                        {
                            "code": "entity_ownership_mismatch",
                            "entity": e.logical_name,
                            "message": f"{e.logical_name} is {cur['ownership']} here but {e.ownership} in the solution",
                        }
                    )
                    continue
                for k in entities_store.retyped(cur["attributes"], attrs):
                    problems.append(
                        {
                            "code": "attribute_type_mismatch",
                            "entity": e.logical_name,
                            "message": f"{e.logical_name}.{k} has another type here",
                        }
                    )
                attrs = {**cur["attributes"], **attrs}
                offline = cur["offline_enabled"] or e.offline_enabled
                capable = cur["offline_capable"]
            else:
                offline, capable = e.offline_enabled, e.offline_capable
            if offline and not capable:
                problems.append(
                    {
                        "code": "entity_not_offline_capable",
                        "entity": e.logical_name,
                        "message": f"{e.logical_name} cannot be enabled for mobile offline",
                    }
                )
            for p in validation.check_attributes(e.logical_name, attrs, [*current, *ent_names]):
                problems.append({**p.as_dict()})
            metas[e.logical_name] = validation.EntityMeta(e.logical_name, e.ownership, attrs, offline, capable)
            entity_rows.append(
                {
                    "logical_name": e.logical_name,
                    "display_name": e.display_name,
                    "ownership": e.ownership,
                    "offline_capable": capable,
                    "offline_enabled": offline,
                    "attributes": attrs,
                    "conflict_policy": e.conflict_policy if cur is None else cur["conflict_policy"],
                }
            )
        checked: list[tuple[ProfileIn, list[dict[str, Any]]]] = []
        for head, items in profiles:
            normalized, found = validation.check_items(items, metas)
            problems += [{**p.as_dict(), "profile": head.name} for p in found]
            checked.append((head, normalized))
        if problems:
            raise ValidationFailed(
                f"solution has {len(problems)} problem(s): {problems[0]['message']}", details={"problems": problems}
            )
        for row in entity_rows:
            await entities_store.upsert(conn, row)
            await ctx.emitter.entity(conn, row["logical_name"])
        result = []
        for head, items in checked:
            pid, created = await store.replace_draft(conn, head.name, head.description, items, new_id(None))
            result.append({"id": pid, "name": head.name, "created": created})
    return ImportResultOut.model_validate({"entities": [r["logical_name"] for r in entity_rows], "profiles": result})
