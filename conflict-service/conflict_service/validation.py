"""Checks a change's attribute values against the entity's metadata (known attribute, type,
required, lookup shape), puts each value in its stored form (``offsync_shared.domain.attributes``)
and lists the lookups whose targets must exist and be readable (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from offsync_shared.domain import attributes

# Lookup targets that live in the admin schema rather than in data.records.
ADMIN_TARGETS = {"systemuser": "users", "user": "users", "team": "teams", "businessunit": "business_units"}


@dataclass(frozen=True, slots=True)
class EntityMeta:
    logical_name: str
    ownership: str  # user_or_team | organization | business | none
    attributes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    conflict_policy: str | None = None


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class LookupRef:
    field: str
    target: str
    id: str


def check_fields(
    meta: EntityMeta, fields: Mapping[str, Any], *, creating: bool
) -> tuple[FieldError | None, list[LookupRef], dict[str, Any]]:
    """The first problem with ``fields`` (None if valid), the lookups to check for existence and
    the fields in their stored form (datetimes normalized to UTC)."""
    lookups: list[LookupRef] = []
    stored: dict[str, Any] = {}
    for name in sorted(fields):
        spec = meta.attributes.get(name)
        if spec is None:
            return FieldError(name, f"unknown attribute {name!r} of {meta.logical_name}"), [], {}
        value = fields[name]
        if value is None:
            if spec.get("required"):
                return FieldError(name, f"{name} is required"), [], {}
            stored[name] = None
            continue
        kind = str(spec.get("type", "string"))
        try:
            stored[name] = attributes.coerce(kind, value, spec)
        except attributes.InvalidValue as exc:
            return FieldError(name, f"{name} {exc}"), [], {}
        if kind == "lookup" and spec.get("target"):
            lookups.append(LookupRef(name, str(spec["target"]), value))
    if creating:
        for name in sorted(meta.attributes):
            if meta.attributes[name].get("required") and fields.get(name) is None:
                return FieldError(name, f"{name} is required"), [], {}
    return None, lookups, stored


def query_value(kind: str, raw: str) -> Any:
    """The typed value an ``attr.<name>=<raw>`` equality filter stands for, so numbers compare as
    numbers (``1.0`` finds ``1``), date-times as instants, and a value that cannot be of the
    attribute's type is a clear 4xx instead of a filter that silently matches nothing.
    Raises ValueError with the reason."""
    return attributes.query_value(kind, raw)
