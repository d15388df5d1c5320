"""The download filter's OpenAPI schema (filter_schema) tells the truth: every filter the rules
accept fits it, as stored (normalized), and it refuses a fourth group level and unknown operators."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import ValidationError
from test_profile_validation import METAS, OPERATOR_TABLE, conditions, leaf, nest

from profile_service import validation as rules
from profile_service.filter_schema import FILTER

OK_ROWS = [(e, a, o, v) for e, a, o, v, code in OPERATOR_TABLE if code is None]


def stored(entity: str, filt: dict[str, Any]) -> dict[str, Any]:
    """The filter as the rules normalize it for storing (fails when they refuse it)."""
    normalized, problems = rules.check_items([{"entity": entity, "filter": filt}], METAS)
    assert problems == []
    out: dict[str, Any] = normalized[0]["filter"]
    return out


@pytest.mark.parametrize(("entity", "attr", "op", "value"), OK_ROWS, ids=[f"{e}.{a}-{o}" for e, a, o, _ in OK_ROWS])
def test_every_accepted_operator_fits_the_schema(entity: str, attr: str, op: str, value: Any) -> None:
    filt = leaf(attr, op, value)
    FILTER.validate_python(filt)
    FILTER.validate_python(stored(entity, filt))


@pytest.mark.parametrize(
    "filt",
    [
        {"kind": "related"},
        {"kind": "all"},
        {"kind": "other", "user": True},
        {"kind": "other", "team": True, "business_unit": True},
        {"kind": "team"},
        nest(0),
        nest(1),
        nest(2),
        nest(3),
    ],
    ids=[
        "related",
        "all",
        "other-user",
        "other-team-bu",
        "shorthand-team",
        "custom-leaf",
        "1-level",
        "2-levels",
        "3-levels",
    ],
)
def test_accepted_filters_fit_the_schema(filt: dict[str, Any]) -> None:
    FILTER.validate_python(filt)
    FILTER.validate_python(stored("account", filt))


@pytest.mark.parametrize(
    "filt",
    [
        nest(4),
        {"kind": "custom", "condition": {"attribute": "name", "operator": "contains", "value": "x"}},
        {"kind": "sometimes"},
        {"kind": "related", "extra": 1},
    ],
    ids=["4-levels", "unknown-operator", "unknown-kind", "extra-field"],
)
def test_the_schema_refuses_what_the_rules_refuse(filt: dict[str, Any]) -> None:
    assert rules.check_filter(METAS["account"], filt)
    with pytest.raises(ValidationError):
        FILTER.validate_python(filt)


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_whatever_the_rules_accept_fits_the_schema(cond: Any) -> None:
    filt = {"kind": "custom", "condition": cond}
    if not rules.check_filter(METAS["account"], filt):
        FILTER.validate_python(filt)
        FILTER.validate_python(stored("account", filt))


def test_operator_enum_is_the_operator_table() -> None:
    schema = FILTER.json_schema()
    assert schema["$defs"]["Operator"]["enum"] == list(rules.OPERATORS)
