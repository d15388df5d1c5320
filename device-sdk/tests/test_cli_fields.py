"""``name=value`` on the command line is typed by the entity's metadata, never parsed as JSON."""

from __future__ import annotations

from typing import Any

import pytest

from offsync_device.fields import FieldError, parse, typed

ATTRS: dict[str, dict[str, Any]] = {
    "name": {"type": "string"},
    "phone": {"type": "string"},
    "employees": {"type": "int"},
    "revenue": {"type": "decimal"},
    "active": {"type": "bool"},
    "since": {"type": "datetime"},
    "parent": {"type": "lookup", "target": "account"},
    "size": {"type": "choice", "options": [1, 2, 3]},
    "tier": {"type": "choice", "options": ["gold", "silver"]},
}

ROWS: list[tuple[str, str, Any]] = [
    ("name", "true", "true"),
    ("name", "null", "null"),
    ("name", '{"a": 1}', '{"a": 1}'),
    ("phone", "0123", "0123"),
    ("employees", "12", 12),
    ("revenue", "1000.00", "1000.00"),
    ("active", "yes", True),
    ("active", "false", False),
    ("since", "2026-03-01T09:30:00+00:00", "2026-03-01T09:30:00+00:00"),
    ("parent", "123", "123"),
    ("size", "2", 2),
    ("tier", "gold", "gold"),
    ("employees", "null", None),
    ("employees", "", None),
]


@pytest.mark.parametrize(("name", "text", "expected"), ROWS, ids=[f"{r[0]}={r[1]}" for r in ROWS])
def test_typed_by_metadata(name: str, text: str, expected: Any) -> None:
    assert typed(name, text, ATTRS[name]) == expected


BAD = [
    ("employees", "twelve", "whole number"),
    ("revenue", "lots", "number"),
    ("revenue", "NaN", "number"),
    ("active", "maybe", "true or false"),
    ("since", "yesterday", "date-time"),
    ("size", "9", "one of 1, 2, 3"),
]


@pytest.mark.parametrize(("name", "text", "needle"), BAD, ids=[f"{r[0]}={r[1]}" for r in BAD])
def test_values_the_attribute_cannot_take(name: str, text: str, needle: str) -> None:
    with pytest.raises(FieldError, match=needle):
        typed(name, text, ATTRS[name])


def test_parse_names_an_unknown_attribute_and_a_missing_equals() -> None:
    assert parse("account", ["name=A=B", "employees=3"], ATTRS) == {"name": "A=B", "employees": 3}
    with pytest.raises(FieldError, match="account has no attribute 'nmae'"):
        parse("account", ["nmae=x"], ATTRS)
    with pytest.raises(FieldError, match="expected name=value"):
        parse("account", ["name"], ATTRS)
    assert parse("account", ["employees=12"], None) == {"employees": "12"}  # no metadata yet: strings
