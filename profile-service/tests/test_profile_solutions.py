"""Solution files without I/O: the lookup targets an export carries along, and planning an import
against this org's entities (merged rows, or every problem at once)."""

from __future__ import annotations

from typing import Any

import pytest

from offsync_shared.errors import ValidationFailed
from profile_service import solutions
from profile_service.schemas import SolutionIn
from profile_service.validation import EntityMeta

LOOKUP = {"type": "lookup", "target": "account"}
EVERY = {
    "account": {"attributes": {"name": {"type": "string"}}},
    "contact": {"attributes": {"parentcustomerid": LOOKUP}},
    "note": {"attributes": {"regardingid": {"type": "lookup", "target": "contact"}}},
    "memo": {"attributes": {"owner": {"type": "lookup", "target": "user"}}},
}


@pytest.mark.parametrize(
    ("used", "carried"),
    [
        ([], []),
        (["account"], ["account"]),
        (["contact"], ["account", "contact"]),
        (["note"], ["account", "contact", "note"]),
        (["memo"], ["memo"]),
        (["gone"], []),
    ],
    ids=["nothing", "no-lookups", "one-hop", "two-hops", "system-target", "unknown"],
)
def test_exports_carry_their_lookup_targets(used: list[str], carried: list[str]) -> None:
    assert solutions.with_lookup_targets(used, EVERY) == carried


def entity(name: str, ownership: str = "organization", **attrs: Any) -> dict[str, Any]:
    return {"logical_name": name, "display_name": name.title(), "ownership": ownership, "attributes": attrs}


def current_row(name: str, ownership: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "logical_name": name,
        "ownership": ownership,
        "attributes": attributes,
        "offline_enabled": False,
        "offline_capable": True,
        "conflict_policy": None,
    }


def codes(doc: dict[str, Any], current: dict[str, dict[str, Any]]) -> list[str]:
    metas = {n: EntityMeta(n, r["ownership"], r["attributes"], False, True) for n, r in current.items()}
    try:
        solutions.plan(solutions.parse(SolutionIn.model_validate(doc)), current, metas)
    except ValidationFailed as exc:
        return [p["code"] for p in (exc.details or {})["problems"]]
    return []


@pytest.mark.parametrize(
    ("doc", "current", "expected"),
    [
        ({"entities": [entity("memo", title={"type": "string"})]}, {}, []),
        (
            {"entities": [entity("memo", "business")]},
            {"memo": current_row("memo", "organization", {})},
            ["entity_ownership_mismatch"],
        ),
        (
            {"entities": [entity("memo", title={"type": "int"})]},
            {"memo": current_row("memo", "organization", {"title": {"type": "string"}})},
            ["attribute_type_mismatch"],
        ),
        (
            {"profiles": [{"name": "P", "items": [{"entity": "memo", "filter": {"kind": "all"}}]}]},
            {},
            ["unknown_entity"],
        ),
    ],
    ids=["new-entity", "other-ownership", "retyped-attribute", "item-of-unknown-entity"],
)
def test_import_plan(doc: dict[str, Any], current: dict[str, dict[str, Any]], expected: list[str]) -> None:
    assert codes(doc, current) == expected


def test_parse_lists_every_malformed_part() -> None:
    doc = SolutionIn.model_validate(
        {"entities": [{"logical_name": "BAD"}], "profiles": [{"name": "P", "x": 1}, {"name": "P"}, {"name": "P"}]}
    )
    with pytest.raises(ValidationFailed) as got:
        solutions.parse(doc)
    found = {p["code"] for p in (got.value.details or {})["problems"]}
    assert found == {"invalid", "duplicate_profile"}
