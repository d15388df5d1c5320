"""Validates a mobile offline profile as an admin writes it: whether a profile item (download
filter, custom condition, relationships, sync interval) is valid for an entity's metadata and the
profile it sits in, in the vocabulary of offsync_shared.domain; pure, no I/O.

Every check returns :class:`Problem` values instead of raising, so the validate endpoint can list
every problem at once and the write endpoints can refuse with the first one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from offsync_shared.domain.attributes import (
    ATTRIBUTE_TYPES,
    MAX_STRING_VALUE,
    SYSTEM_TARGETS,
    InvalidValue,
    is_literal,
    operand,
    system_attributes,
)
from offsync_shared.domain.operators import MAX_CONDITIONS, MAX_GROUP_LEVELS, MAX_IN_VALUES, OPERATORS
from offsync_shared.domain.org import OWNERSHIPS

__all__ = ["ATTRIBUTE_TYPES", "MAX_GROUP_LEVELS", "OPERATORS", "OWNERSHIPS"]

MAX_RELATIONSHIPS = 15
MIN_SYNC_INTERVAL_MINUTES = 5
MAX_SYNC_INTERVAL_MINUTES = 24 * 60

# The seed's table: which download filter each ownership type offers.
ALLOWED_KINDS: dict[str, tuple[str, ...]] = {
    "user_or_team": ("related", "all", "other", "custom"),
    "organization": ("related", "all", "custom"),
    "business": ("related", "all", "other", "custom"),
    "none": ("related", "custom"),
}
# For kind "other": which of the user's / team's / business unit's record choices each ownership offers.
ALLOWED_OTHER: dict[str, tuple[str, ...]] = {
    "user_or_team": ("user", "team", "business_unit"),
    "business": ("business_unit",),
}
OTHER_FLAGS = ("user", "team", "business_unit")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a profile, in the shape the API returns."""

    code: str
    message: str
    field: str | None = None
    entity: str | None = None
    details: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.entity is not None:
            out["entity"] = self.entity
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class EntityMeta:
    logical_name: str
    ownership: str
    attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    offline_enabled: bool = False
    offline_capable: bool = True

    def filter_attributes(self) -> dict[str, Mapping[str, Any]]:
        """The entity's own attributes plus the system ones a filter may use."""
        attrs: dict[str, Mapping[str, Any]] = dict(system_attributes(self.ownership))
        attrs.update(self.attributes)
        return attrs


def _kinds_message(ownership: str) -> str:
    kinds = ", ".join(ALLOWED_KINDS[ownership])
    other = ALLOWED_OTHER.get(ownership)
    extra = f" (other: {', '.join(other)})" if other else ""
    return f"allowed download filters for {ownership} entities: {kinds}{extra}"


# --- download filter ---------------------------------------------------------------------------


def normalize_filter(raw: Any) -> Any:
    """Accept the shorthand kinds user / team / business_unit as `other` with that one flag."""
    if isinstance(raw, dict) and raw.get("kind") in OTHER_FLAGS and set(raw) == {"kind"}:
        return {"kind": "other", **{f: f == raw["kind"] for f in OTHER_FLAGS}}
    if isinstance(raw, dict) and raw.get("kind") == "other":
        # Spell out every flag so published filters have one shape; unknown keys stay to be refused.
        return {**raw, **{f: raw.get(f, False) for f in OTHER_FLAGS}}
    return raw


def retyped(old: Mapping[str, Mapping[str, Any]], added: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Attributes of ``added`` that exist in ``old`` with another type or lookup target
    (attributes are added, never retyped)."""
    return [
        k
        for k, v in added.items()
        if (o := old.get(k)) is not None and (o.get("type"), o.get("target")) != (v.get("type"), v.get("target"))
    ]


def check_filter(meta: EntityMeta, raw: Any) -> list[Problem]:
    """Problems of a download filter for an entity of ``meta``'s ownership (empty = valid)."""
    ent = meta.logical_name
    f = normalize_filter(raw)
    if not isinstance(f, dict) or not isinstance(f.get("kind"), str):
        return [Problem("invalid_filter", "filter must be an object with a string 'kind'", "filter", ent)]
    kind = f["kind"]
    allowed = ALLOWED_KINDS[meta.ownership]
    if kind not in allowed:
        return [
            Problem(
                "filter_not_allowed",
                f"download filter {kind!r} is not offered for {ent}; {_kinds_message(meta.ownership)}",
                "filter.kind",
                ent,
                {"allowed": list(allowed), "allowed_other": list(ALLOWED_OTHER.get(meta.ownership, ()))},
            )
        ]
    if kind in ("related", "all"):
        extra = set(f) - {"kind"}
        if extra:
            return [Problem("invalid_filter", f"unexpected field(s) for kind {kind}: {sorted(extra)}", "filter", ent)]
        return []
    if kind == "other":
        extra = set(f) - {"kind", *OTHER_FLAGS}
        if extra:
            return [Problem("invalid_filter", f"unexpected field(s) for kind other: {sorted(extra)}", "filter", ent)]
        problems: list[Problem] = []
        for flag in OTHER_FLAGS:
            if not isinstance(f.get(flag, False), bool):
                problems.append(Problem("invalid_filter", f"'{flag}' must be true or false", f"filter.{flag}", ent))
        if problems:
            return problems
        chosen = [flag for flag in OTHER_FLAGS if f.get(flag)]
        offered = ALLOWED_OTHER[meta.ownership]
        if not chosen:
            return [
                Problem(
                    "filter_not_allowed",
                    f"kind other needs at least one of: {', '.join(offered)}; {_kinds_message(meta.ownership)}",
                    "filter",
                    ent,
                    {"allowed_other": list(offered)},
                )
            ]
        bad = [c for c in chosen if c not in offered]
        if bad:
            return [
                Problem(
                    "filter_not_allowed",
                    f"{', '.join(bad)} records are not offered for {ent}; {_kinds_message(meta.ownership)}",
                    f"filter.{bad[0]}",
                    ent,
                    {"allowed": list(allowed), "allowed_other": list(offered)},
                )
            ]
        return []
    # custom
    extra = set(f) - {"kind", "condition"}
    if extra:
        return [Problem("invalid_filter", f"unexpected field(s) for kind custom: {sorted(extra)}", "filter", ent)]
    if meta.ownership == "none" and not meta.attributes:
        return [
            Problem(
                "filter_not_allowed",
                f"{ent} has no attributes to filter on; {_kinds_message('none')}",
                "filter.kind",
                ent,
            )
        ]
    if "condition" not in f:
        return [Problem("invalid_filter", "custom filter needs a 'condition'", "filter.condition", ent)]
    counter = [0]
    return _check_condition(meta, meta.filter_attributes(), f["condition"], "filter.condition", 1, counter)


def _check_condition(
    meta: EntityMeta,
    attrs: Mapping[str, Mapping[str, Any]],
    cond: Any,
    path: str,
    level: int,
    counter: list[int],
) -> list[Problem]:
    ent = meta.logical_name
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        return [
            Problem(
                "filter_too_large", f"a custom filter holds at most {MAX_CONDITIONS} conditions and groups", path, ent
            )
        ]
    if not isinstance(cond, dict):
        return [Problem("invalid_condition", "a condition must be an object", path, ent)]
    group_keys = [k for k in ("and", "or") if k in cond]
    if group_keys:
        if len(cond) != 1:
            return [
                Problem("invalid_condition", "a group is exactly one of {'and': [...]} or {'or': [...]}", path, ent)
            ]
        op = group_keys[0]
        members = cond[op]
        if level > MAX_GROUP_LEVELS:
            return [Problem("filter_too_deep", f"condition groups nest at most {MAX_GROUP_LEVELS} levels", path, ent)]
        if not isinstance(members, list) or not members:
            return [Problem("invalid_condition", f"'{op}' needs a non-empty list of conditions", f"{path}.{op}", ent)]
        problems: list[Problem] = []
        for i, m in enumerate(members):
            problems += _check_condition(meta, attrs, m, f"{path}.{op}[{i}]", level + 1, counter)
            if counter[0] > MAX_CONDITIONS:
                break
        return problems
    return _check_leaf(meta, attrs, cond, path)


def _check_leaf(
    meta: EntityMeta, attrs: Mapping[str, Mapping[str, Any]], cond: dict[str, Any], path: str
) -> list[Problem]:
    ent = meta.logical_name
    extra = set(cond) - {"attribute", "operator", "value"}
    if extra:
        return [Problem("invalid_condition", f"unexpected field(s) in condition: {sorted(extra)}", path, ent)]
    name, op = cond.get("attribute"), cond.get("operator")
    if not isinstance(name, str):
        return [Problem("invalid_condition", "condition needs a string 'attribute'", f"{path}.attribute", ent)]
    if not isinstance(op, str) or op not in OPERATORS:
        return [
            Problem(
                "unknown_operator",
                f"unknown operator {op!r}; operators: {', '.join(OPERATORS)}",
                f"{path}.operator",
                ent,
            )
        ]
    attr = attrs.get(name)
    if attr is None:
        return [Problem("unknown_attribute", f"{ent} has no attribute {name!r}", f"{path}.attribute", ent)]
    spec = OPERATORS[op]
    atype = attr.get("type")
    if atype not in spec.types:
        return [
            Problem(
                "operator_type_mismatch",
                f"operator {op} does not apply to {atype} attribute {name!r} (applies to: {', '.join(spec.types)})",
                f"{path}.operator",
                ent,
            )
        ]
    if spec.lookup_targets and attr.get("target") not in spec.lookup_targets:
        return [
            Problem(
                "operator_type_mismatch",
                f"operator {op} needs a lookup to {' or '.join(spec.lookup_targets)}; {name!r} looks up {attr.get('target')!r}",
                f"{path}.operator",
                ent,
            )
        ]
    vpath = f"{path}.value"
    if spec.value == "none":
        if cond.get("value") is not None:
            return [Problem("invalid_value", f"operator {op} takes no value", vpath, ent)]
        return []
    if "value" not in cond or cond["value"] is None:
        return [Problem("invalid_value", f"operator {op} needs a value", vpath, ent)]
    value = cond["value"]
    if spec.value == "text":
        if not _is_text(value):
            return [Problem("invalid_value", f"operator {op} needs a string value", vpath, ent)]
        return []
    if spec.value == "list":
        if not isinstance(value, list) or not value:
            return [Problem("invalid_value", f"operator {op} needs a non-empty list of values", vpath, ent)]
        if len(value) > MAX_IN_VALUES:
            return [Problem("invalid_value", f"operator {op} takes at most {MAX_IN_VALUES} values", vpath, ent)]
        for i, v in enumerate(value):
            if not value_matches(atype, v):
                return [Problem("invalid_value", f"value {i} is not a valid {atype}", f"{vpath}[{i}]", ent)]
        return []
    if not value_matches(atype, value):
        return [Problem("invalid_value", f"value is not a valid {atype} for attribute {name!r}", vpath, ent)]
    return []


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= MAX_STRING_VALUE and "\x00" not in v


def value_matches(atype: str, v: Any) -> bool:
    """Whether JSON value ``v`` is a valid literal of attribute type ``atype``."""
    return is_literal(atype, v)


def normalize_condition(attrs: Mapping[str, Mapping[str, Any]], cond: Any) -> Any:
    """A valid condition with its operands in the stored form of their attribute's type (custom
    datetimes as UTC instants), so evaluators compare them with stored values as they are."""
    if not isinstance(cond, dict):
        return cond
    for group in ("and", "or"):
        if isinstance(cond.get(group), list):
            return {group: [normalize_condition(attrs, c) for c in cond[group]]}
    spec = attrs.get(cond.get("attribute"))  # type: ignore[arg-type]
    if spec is None or spec.get("type") != "datetime" or cond.get("value") is None:
        return cond
    atype = str(spec["type"])
    try:
        value = cond["value"]
        norm = [operand(atype, v) for v in value] if isinstance(value, list) else operand(atype, value)
    except InvalidValue:
        return cond
    return {**cond, "value": norm}


# --- relationships ---------------------------------------------------------------------------


def resolve_relationships(
    entity: str,
    raw: Any,
    profile_entities: Sequence[str],
    metas: Mapping[str, EntityMeta],
) -> tuple[list[dict[str, str]], list[Problem]]:
    """Check an item's relationships and fill in each one's ``side``.

    A relationship of an item on E is ``{"entity": F, "attribute": A}``: F must be another entity
    already in the profile and A a lookup between E and F — E's lookup to F (side ``self``) or
    F's lookup to E (side ``related``). A self-reference (F = E) is refused: its chain has no
    bound in the metadata.
    """
    if not isinstance(raw, list):
        return [], [Problem("invalid_relationship", "relationships must be a list", "relationships", entity)]
    if len(raw) > MAX_RELATIONSHIPS:
        return [], [
            Problem(
                "too_many_relationships",
                f"an item has at most {MAX_RELATIONSHIPS} relationships",
                "relationships",
                entity,
            )
        ]
    out: list[dict[str, str]] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    emeta = metas.get(entity)
    for i, rel in enumerate(raw):
        path = f"relationships[{i}]"
        if not isinstance(rel, dict) or set(rel) - {"entity", "attribute", "side"}:
            problems.append(
                Problem("invalid_relationship", "a relationship is {entity, attribute, side?}", path, entity)
            )
            continue
        other, attr, side = rel.get("entity"), rel.get("attribute"), rel.get("side")
        if not isinstance(other, str) or not isinstance(attr, str) or side not in (None, "self", "related"):
            problems.append(
                Problem(
                    "invalid_relationship",
                    "entity and attribute must be strings; side is self or related",
                    path,
                    entity,
                )
            )
            continue
        if other == entity:
            problems.append(
                Problem("relationship_self", f"{entity} cannot be related to itself", f"{path}.entity", entity)
            )
            continue
        if other not in profile_entities:
            problems.append(
                Problem(
                    "relationship_entity_not_in_profile",
                    f"add {other!r} to the profile before relating {entity} to it",
                    f"{path}.entity",
                    entity,
                )
            )
            continue
        ometa = metas.get(other)
        sides: list[str] = []
        if emeta is not None and _is_lookup_to(emeta.attributes.get(attr), other):
            sides.append("self")
        if ometa is not None and _is_lookup_to(ometa.attributes.get(attr), entity):
            sides.append("related")
        if not sides:
            problems.append(
                Problem(
                    "relationship_not_a_lookup",
                    f"{attr!r} is neither a lookup of {entity} to {other} nor of {other} to {entity}",
                    f"{path}.attribute",
                    entity,
                )
            )
            continue
        if side is None:
            if len(sides) > 1:
                problems.append(
                    Problem(
                        "relationship_ambiguous", f"{attr!r} exists on both sides; give 'side'", f"{path}.side", entity
                    )
                )
                continue
            side = sides[0]
        elif side not in sides:
            problems.append(
                Problem("invalid_relationship", f"{attr!r} is not a lookup on the {side} side", f"{path}.side", entity)
            )
            continue
        key = (other, attr, side)
        if key in seen:
            problems.append(
                Problem("duplicate_relationship", f"relationship {other}.{attr} listed twice", path, entity)
            )
            continue
        seen.add(key)
        out.append({"entity": other, "attribute": attr, "side": side})
    return out, problems


def _is_lookup_to(attr: Mapping[str, Any] | None, target: str) -> bool:
    return bool(attr) and attr.get("type") == "lookup" and attr.get("target") == target  # type: ignore[union-attr]


def check_relationship_graph(items: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> list[Problem]:
    """Whole-profile relationship checks. ``items``: entity -> (filter kind, relationships).

    An item's records = its own filter's ∪ what its relationships bring from the related
    entities' records; evaluated as a least fixed point, which terminates on finite data.
    A cycle therefore is allowed only if some entity on it has its own records (a kind other
    than ``related``); a cycle of related-only items can never receive a record and is refused.
    Relationships to entities that left the profile are reported too.
    """
    problems: list[Problem] = []
    deps: dict[str, list[str]] = {}
    for ent, (_, rels) in items.items():
        deps[ent] = []
        for r in rels:
            other = r.get("entity")
            if other not in items:
                problems.append(
                    Problem(
                        "relationship_entity_not_in_profile",
                        f"{ent} is related to {other!r}, which is no longer in the profile",
                        "relationships",
                        ent,
                    )
                )
            elif other != ent:
                deps[ent].append(str(other))
    # Entities that can receive records: own filter not "related", or reachable from such.
    seeded = {e for e, (kind, _) in items.items() if kind != "related"}
    changed = True
    while changed:
        changed = False
        for e, ds in deps.items():
            if e not in seeded and any(d in seeded for d in ds):
                seeded.add(e)
                changed = True
    for cycle in _cycles(deps):
        if not any(e in seeded for e in cycle):
            chain = " -> ".join([*cycle, cycle[0]])
            problems.append(
                Problem(
                    "relationship_cycle",
                    f"relationship cycle {chain} cannot bring any record: every entity on it downloads related records only",
                    "relationships",
                    cycle[0],
                )
            )
    return problems


def _cycles(deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
            if w not in deps:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def check_sync_interval(entity: str, minutes: Any) -> list[Problem]:
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, int)
        or not (MIN_SYNC_INTERVAL_MINUTES <= minutes <= MAX_SYNC_INTERVAL_MINUTES)
    ):
        return [
            Problem(
                "invalid_sync_interval",
                f"sync interval is {MIN_SYNC_INTERVAL_MINUTES} to {MAX_SYNC_INTERVAL_MINUTES} minutes (5 minutes to 1 day)",
                "sync_interval_minutes",
                entity,
            )
        ]
    return []


# --- entity metadata -------------------------------------------------------------------------

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_attributes(entity: str, attributes: Mapping[str, Any], known_entities: Sequence[str]) -> list[Problem]:
    """Attribute definitions of an entity: names, types, lookup targets."""
    problems: list[Problem] = []
    for name, spec in attributes.items():
        path = f"attributes.{name}"
        if not NAME_RE.match(name):
            problems.append(
                Problem("invalid_attribute", f"attribute name {name!r} must match {NAME_RE.pattern}", path, entity)
            )
            continue
        atype = spec.get("type")
        if atype not in ATTRIBUTE_TYPES:
            problems.append(
                Problem(
                    "invalid_attribute", f"type must be one of {', '.join(ATTRIBUTE_TYPES)}", f"{path}.type", entity
                )
            )
            continue
        target = spec.get("target")
        if atype == "lookup":
            if target not in (*known_entities, *SYSTEM_TARGETS, entity):
                problems.append(
                    Problem(
                        "invalid_attribute", f"lookup target {target!r} is not a known entity", f"{path}.target", entity
                    )
                )
        elif target is not None:
            problems.append(Problem("invalid_attribute", "only lookups have a target", f"{path}.target", entity))
    return problems


# --- a whole profile ---------------------------------------------------------------------------


def check_items(
    items: Sequence[Mapping[str, Any]], metas: Mapping[str, EntityMeta]
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Check a profile's items together; returns them normalized (filter shorthand expanded,
    relationship sides filled in) and every problem found."""
    problems: list[Problem] = []
    entities = [str(i.get("entity")) for i in items]
    seen: set[str] = set()
    for e in entities:
        if e in seen:
            problems.append(Problem("duplicate_item", f"{e} is in the profile twice", "entity", e))
        seen.add(e)
    normalized: list[dict[str, Any]] = []
    graph: dict[str, tuple[Any, list[dict[str, str]]]] = {}
    for item in items:
        ent = str(item.get("entity"))
        meta = metas.get(ent)
        filt = normalize_filter(item.get("filter"))
        rels_raw = item.get("relationships", [])
        interval = item.get("sync_interval_minutes", MIN_SYNC_INTERVAL_MINUTES)
        out = {"entity": ent, "filter": filt, "relationships": rels_raw, "sync_interval_minutes": interval}
        normalized.append(out)
        if meta is None:
            problems.append(Problem("unknown_entity", f"entity {ent!r} does not exist", "entity", ent))
            continue
        if not meta.offline_enabled:
            problems.append(
                Problem(
                    "entity_not_offline_enabled",
                    f"{ent} is not enabled for mobile offline; enable it first",
                    "entity",
                    ent,
                )
            )
        filter_problems = check_filter(meta, filt)
        problems += filter_problems
        if not filter_problems and isinstance(filt, dict) and filt.get("kind") == "custom":
            out["filter"] = {**filt, "condition": normalize_condition(meta.filter_attributes(), filt["condition"])}
        problems += check_sync_interval(ent, interval)
        rels, rel_problems = resolve_relationships(ent, rels_raw, entities, metas)
        problems += rel_problems
        if not rel_problems:
            out["relationships"] = rels
        # Only well-formed relationships form the graph; broken ones are reported above already.
        graph[ent] = (filt.get("kind") if isinstance(filt, dict) else None, rels if not rel_problems else [])
    problems += [p for p in check_relationship_graph(graph) if p.code == "relationship_cycle"]
    return normalized, problems
