"""Knows the attribute types of an entity's records: which JSON values each type accepts, the one
form a value is stored in (``coerce``), which literals a filter may compare it with, and the system
attributes every filter may use besides the entity's own (pure; no I/O).

Decisions (docs/architecture.md, "Attribute types"):
- numbers are JSON numbers: a numeric string (``"1000.00"`` for a decimal, ``"1"`` for a choice)
  is refused on write, so no stored value is of a JSON type a filter would then never match;
- a custom datetime is stored normalized to a UTC instant in one fixed-width text form
  (``2024-01-02T04:00:00.000000Z``), so text order is instant order everywhere (Python, SQL);
  a value without an offset is taken as UTC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, get_args

AttributeTypeName = Literal["string", "int", "decimal", "bool", "datetime", "lookup", "choice"]
ATTRIBUTE_TYPES: tuple[str, ...] = get_args(AttributeTypeName)
# Lookup targets that are not entities of the catalogue: the org model itself. "owner" = user or team.
SYSTEM_TARGETS: tuple[str, ...] = ("user", "team", "businessunit", "owner")

INT64 = 2**63 - 1
MAX_STRING_VALUE = 4000  # longest text operand a filter may hold

# System attributes a filter may use, and the record column each reads.
OWNER_ATTRIBUTES: Mapping[str, str] = {"ownerid": "owner_id", "owningbusinessunit": "business_unit_id"}
DATETIME_ATTRIBUTES: Mapping[str, str] = {"createdon": "created_at", "modifiedon": "modified_at"}
SYSTEM_ATTRIBUTES: tuple[str, ...] = (*OWNER_ATTRIBUTES, *DATETIME_ATTRIBUTES)


class InvalidValue(ValueError):
    """A value that is not of its attribute's type; the message completes "<name> ..."."""


def system_attributes(ownership: str) -> dict[str, dict[str, str]]:
    """The system attributes a filter on an entity of ``ownership`` may use, as attribute specs."""
    attrs: dict[str, dict[str, str]] = {"createdon": {"type": "datetime"}, "modifiedon": {"type": "datetime"}}
    if ownership == "user_or_team":
        attrs["ownerid"] = {"type": "lookup", "target": "owner"}
    if ownership in ("user_or_team", "business"):
        attrs["owningbusinessunit"] = {"type": "lookup", "target": "businessunit"}
    return attrs


# ------------------------------------------------------------------------------ datetimes


def parse_instant(value: str) -> datetime:
    """An ISO 8601 date-time as an aware UTC instant (no offset → UTC). Raises InvalidValue."""
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue("must be an ISO 8601 date-time string") from None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def format_instant(d: datetime) -> str:
    """The stored form: UTC, microseconds always written, so text order is instant order."""
    return d.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def normalize_datetime(value: str) -> str:
    return format_instant(parse_instant(value))


# ------------------------------------------------------------------------------ values


def _text(value: object, *, limit: int | None) -> str:
    if not isinstance(value, str):
        raise InvalidValue("must be a string")
    if "\x00" in value:  # PostgreSQL text/jsonb cannot store NUL
        raise InvalidValue("must not contain NUL characters")
    if limit is not None and len(value) > limit:
        raise InvalidValue(f"longer than {limit} characters")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("must be an integer (a JSON number, not a string)")
    if not -INT64 <= value <= INT64:
        raise InvalidValue("is out of the 64-bit integer range")
    return value


def coerce(atype: str, value: object, spec: Mapping[str, Any] | None = None) -> object:
    """``value`` (not None) in the form it is stored in, or InvalidValue with the reason.

    ``spec`` is the attribute's metadata (``max_length`` for strings, ``options`` for choices).
    An attribute type this module does not know is stored as given."""
    spec = spec or {}
    if atype == "string":
        max_length = spec.get("max_length")
        return _text(value, limit=max_length if isinstance(max_length, int) else None)
    if atype == "lookup":
        if not (isinstance(value, str) and value):
            raise InvalidValue("must be a record id (string)")
        return _text(value, limit=None)
    if atype == "int":
        return _integer(value)
    if atype == "choice":
        options = spec.get("options")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue("must be a choice value (an integer, not a string)")
        if isinstance(options, list) and options and value not in options:
            raise InvalidValue("is not one of the allowed choices")
        return _integer(value)
    if atype == "decimal":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue("must be a number (a JSON number, not a string)")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue("must be a finite number")
        return value
    if atype == "bool":
        if not isinstance(value, bool):
            raise InvalidValue("must be true or false")
        return value
    if atype == "datetime":
        return normalize_datetime(_text(value, limit=None))
    return value


def is_literal(atype: str, value: object) -> bool:
    """Whether JSON value ``value`` is a valid filter operand for attribute type ``atype``."""
    try:
        operand(atype, value)
    except InvalidValue:
        return False
    return True


def operand(atype: str, value: object) -> object:
    """A filter operand in the form stored values of ``atype`` have (datetimes normalized), so a
    comparison of the two is a comparison of the values. Raises InvalidValue."""
    if atype in ("string", "lookup", "datetime") and isinstance(value, str) and len(value) > MAX_STRING_VALUE:
        raise InvalidValue(f"longer than {MAX_STRING_VALUE} characters")
    if atype == "decimal" and isinstance(value, int) and not isinstance(value, bool):
        return _integer(value)
    return coerce(atype, value)


def query_value(atype: str, raw: str) -> object:
    """The typed value an ``attr.<name>=<raw>`` query filter stands for (the records API's query
    string carries text), so it compares like a stored value. Raises InvalidValue."""
    if atype in ("int", "choice"):
        try:
            return _integer(int(raw))
        except ValueError:
            raise InvalidValue("must be an integer") from None
    if atype == "decimal":
        try:
            number = Decimal(raw)
        except InvalidOperation:
            raise InvalidValue("must be a number") from None
        if not number.is_finite():
            raise InvalidValue("must be a finite number")
        return number
    if atype == "bool":
        if raw not in ("true", "false"):
            raise InvalidValue("must be true or false")
        return raw == "true"
    if atype == "datetime":
        return normalize_datetime(raw)
    return _text(raw, limit=None)
