"""Checks a change's attribute values against the entity's metadata (known attribute, type,
required, lookup shape) and lists the lookups whose targets must exist (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

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


def _type_error(kind: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    if kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if "\x00" in value:  # PostgreSQL text/jsonb cannot store NUL
            return "must not contain NUL characters"
        max_length = spec.get("max_length")
        if isinstance(max_length, int) and len(value) > max_length:
            return f"longer than {max_length} characters"
        return None
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return "must be a number"
        try:
            Decimal(str(value))
        except ArithmeticError:
            return "must be a number"
        return None if Decimal(str(value)).is_finite() else "must be a finite number"
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "datetime":
        if not isinstance(value, str):
            return "must be an ISO 8601 date-time string"
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return "must be an ISO 8601 date-time string"
        return None
    if kind == "lookup":
        return None if isinstance(value, str) and value else "must be a record id (string)"
    if kind == "choice":
        options = spec.get("options")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return "must be a choice value"
        if isinstance(options, list) and options and value not in options:
            return "is not one of the allowed choices"
        return None
    return None  # an attribute type we do not know yet is not checked


def check_fields(
    meta: EntityMeta, fields: Mapping[str, Any], *, creating: bool
) -> tuple[FieldError | None, list[LookupRef]]:
    """The first problem with ``fields`` (None if valid) and the lookups to check for existence."""
    lookups: list[LookupRef] = []
    for name in sorted(fields):
        spec = meta.attributes.get(name)
        if spec is None:
            return FieldError(name, f"unknown attribute {name!r} of {meta.logical_name}"), []
        value = fields[name]
        if value is None:
            if spec.get("required"):
                return FieldError(name, f"{name} is required"), []
            continue
        kind = str(spec.get("type", "string"))
        problem = _type_error(kind, value, spec)
        if problem:
            return FieldError(name, f"{name} {problem}"), []
        if kind == "lookup" and spec.get("target"):
            lookups.append(LookupRef(name, str(spec["target"]), value))
    if creating:
        for name in sorted(meta.attributes):
            if meta.attributes[name].get("required") and fields.get(name) is None:
                return FieldError(name, f"{name} is required"), []
    return None, lookups


def query_value(kind: str, raw: str) -> Any:
    """The typed value an ``attr.<name>=<raw>`` equality filter stands for, so numbers compare as
    numbers (``1.0`` finds ``1``) and a value that cannot be of the attribute's type is a clear
    4xx instead of a filter that silently matches nothing. Raises ValueError with the reason."""
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("must be an integer") from None
    if kind == "decimal":
        try:
            value = Decimal(raw)
        except ArithmeticError:
            raise ValueError("must be a number") from None
        if not value.is_finite():
            raise ValueError("must be a finite number")
        return value
    if kind == "bool":
        if raw not in ("true", "false"):
            raise ValueError("must be true or false")
        return raw == "true"
    return raw  # strings, lookups, choices and date-times compare as their stored text
