"""Turns console form fields into the admin API's request bodies (download filters,
relationships, people) and back; pure, no I/O, so the console never holds a rule of its own:
the bodies go through the API's own validation."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from profile_service import validation

FILTER_LABELS = {
    "related": "Download related records only",
    "all": "All records",
    "other": "Other data filter",
    "custom": "Custom filter",
}
OTHER_LABELS = {
    "user": "Download user records",
    "team": "Download team records",
    "business_unit": "Download my business unit's records",
}


class FormError(ValueError):
    """A form field the console cannot even turn into a request body."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _flag(form: Mapping[str, Any], name: str) -> bool:
    return str(form.get(name, "")).lower() in ("on", "true", "1", "yes")


def filter_from_form(form: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(form.get("kind") or "")
    if kind == "other":
        return {"kind": "other", **{f: _flag(form, f"other_{f}") for f in validation.OTHER_FLAGS}}
    if kind == "custom":
        raw = str(form.get("condition") or "")
        try:
            condition = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            raise FormError("the custom filter could not be read; rebuild it", "condition") from None
        return {"kind": "custom", "condition": condition}
    return {"kind": kind}


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]


def relationships_from_form(form: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for value in _as_list(form.get("relationship")):
        parts = value.split("|")
        if len(parts) != 3:
            raise FormError("a relationship choice was not understood", "relationship")
        entity, attribute, side = parts
        out.append({"entity": entity, "attribute": attribute, "side": side})
    return out


def item_body(form: Mapping[str, Any], entity: str) -> dict[str, Any]:
    interval = str(form.get("sync_interval_minutes") or "5")
    if not interval.isdigit():
        raise FormError("the sync interval must be a whole number of minutes", "sync_interval_minutes")
    return {
        "entity": entity,
        "filter": filter_from_form(form),
        "relationships": relationships_from_form(form),
        "sync_interval_minutes": int(interval),
    }


def relationship_choices(
    entity: str, metas: Mapping[str, validation.EntityMeta], in_profile: Sequence[str]
) -> list[dict[str, str]]:
    """Relationships an item on ``entity`` may use: only to entities already in the profile."""
    me = metas.get(entity)
    out: list[dict[str, str]] = []
    for other in sorted(in_profile):
        if other == entity or other not in metas or me is None:
            continue
        for attr, spec in sorted(me.attributes.items()):
            if spec.get("type") == "lookup" and spec.get("target") == other:
                label = f"{metas[other].logical_name.title()} | Field name: {attr} (this {entity}'s lookup)"
                out.append(
                    {
                        "value": f"{other}|{attr}|self",
                        "entity": other,
                        "attribute": attr,
                        "side": "self",
                        "label": label,
                    }
                )
        for attr, spec in sorted(metas[other].attributes.items()):
            if spec.get("type") == "lookup" and spec.get("target") == entity:
                label = f"{metas[other].logical_name.title()} | Field name: {attr} (the {other}'s lookup)"
                out.append(
                    {
                        "value": f"{other}|{attr}|related",
                        "entity": other,
                        "attribute": attr,
                        "side": "related",
                        "label": label,
                    }
                )
    return out


def builder_spec(meta: validation.EntityMeta) -> dict[str, Any]:
    """What the custom-filter builder may offer for an entity: its attributes with their types,
    and for each operator the types (and lookup targets) it accepts and the value it takes."""
    return {
        "attributes": {name: dict(spec) for name, spec in sorted(meta.filter_attributes().items())},
        "operators": {
            op: {"types": list(s.types), "value": s.value, "targets": list(s.lookup_targets)}
            for op, s in validation.OPERATORS.items()
        },
        "max_levels": validation.MAX_GROUP_LEVELS,
    }


def describe_filter(f: Mapping[str, Any]) -> str:
    kind = f.get("kind")
    if kind == "other":
        chosen = [OTHER_LABELS[k] for k in validation.OTHER_FLAGS if f.get(k)]
        return "Other: " + (", ".join(chosen) or "nothing chosen")
    if kind == "custom":
        return "Custom: " + describe_condition(f.get("condition"))
    return FILTER_LABELS.get(str(kind), str(kind))


def describe_condition(c: Any) -> str:
    if not isinstance(c, Mapping):
        return "?"
    for op in ("and", "or"):
        if op in c and isinstance(c[op], list):
            return "(" + f" {op} ".join(describe_condition(x) for x in c[op]) + ")"
    value = c.get("value")
    shown = "" if "value" not in c else " " + json.dumps(value)
    return f"{c.get('attribute')} {c.get('operator')}{shown}"
