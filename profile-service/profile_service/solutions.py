"""Solution files, decided without I/O: reading one (every malformed part at once), the lookup
targets an export must carry along, and planning an import against this org's entities (what to
write, or every problem) before anything is written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from offsync_shared.errors import ValidationFailed
from profile_service import validation
from profile_service.schemas import EntityIn, ItemIn, ProfileIn, SolutionIn

ProfileDraft = tuple[ProfileIn, list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Parsed:
    entities: list[EntityIn]
    profiles: list[ProfileDraft]


@dataclass(frozen=True, slots=True)
class Plan:
    """``entity_rows``: entity rows to upsert (every column); ``profiles``: drafts with normalized items."""

    entity_rows: list[dict[str, Any]]
    profiles: list[ProfileDraft]


def with_lookup_targets(used: Iterable[str], every: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``used`` and, transitively, the entities their lookups target (so the metadata imports
    into an org lacking them), sorted; names missing from ``every`` are left out."""
    found = set(used)
    todo = sorted(found)
    while todo:
        name = todo.pop()
        for spec in every[name]["attributes"].values() if name in every else ():
            target = spec.get("target")
            if spec.get("type") == "lookup" and target in every and target not in found:
                found.add(target)
                todo.append(target)
    return [n for n in sorted(found) if n in every]


def _pydantic_problems(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"code": "invalid", "message": e["msg"], "field": f"{where}." + ".".join(str(x) for x in e["loc"])}
        for e in exc.errors()[:20]
    ]


def parse(body: SolutionIn) -> Parsed:
    """The solution's entities and profile drafts, or a 422 listing every malformed part."""
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
    return Parsed(entities, profiles)


def plan(parsed: Parsed, current: Mapping[str, Mapping[str, Any]], metas: dict[str, validation.EntityMeta]) -> Plan:
    """Merge the solution's entities into ``current`` (this org's entity rows) and check every
    profile draft against the result; a 422 with every problem when anything does not fit.
    ``metas`` (this org's entity metadata) is updated with the merged entities."""
    problems: list[dict[str, Any]] = []
    ent_names = [e.logical_name for e in parsed.entities]
    entity_rows: list[dict[str, Any]] = []
    for e in parsed.entities:
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
            for k in validation.retyped(cur["attributes"], attrs):
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
    checked: list[ProfileDraft] = []
    for head, items in parsed.profiles:
        normalized, found = validation.check_items(items, metas)
        problems += [{**p.as_dict(), "profile": head.name} for p in found]
        checked.append((head, normalized))
    if problems:
        raise ValidationFailed(
            f"solution has {len(problems)} problem(s): {problems[0]['message']}", details={"problems": problems}
        )
    return Plan(entity_rows, checked)
