"""The permission check: privilege depths against record ownership, BU tree and teams, and the
payload validation against entity metadata."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict_service.validation import EntityMeta, check_fields, query_value
from offsync_shared.domain.org import (
    Actor,
    Depth,
    Operation,
    Ownership,
    bu_subtree,
    combine_privileges,
    default_ownership,
    may,
    read_scope,
)

# root ─ sales ─ sales-east
#      └ ops
PARENTS = {"root": None, "sales": "root", "east": "sales", "ops": "root"}


def actor(depth: str, *, entity: str = "account", bu: str = "sales", enabled: bool = True) -> Actor:
    privs = combine_privileges([{entity: {"read": depth, "write": depth, "create": depth, "delete": depth}}])
    return Actor("u1", bu, frozenset({"t1"}), bu_subtree(PARENTS, bu), privs, enabled)


MINE = Ownership("u1", "user", "sales")
MY_TEAM = Ownership("t1", "team", "sales")
COLLEAGUE = Ownership("u2", "user", "sales")
BELOW = Ownership("u3", "user", "east")
ELSEWHERE = Ownership("u4", "user", "ops")

# (id, depth, entity ownership, record, allowed)
TABLE = [
    ("none-own", "none", "user_or_team", MINE, False),
    ("user-own", "user", "user_or_team", MINE, True),
    ("user-team", "user", "user_or_team", MY_TEAM, True),
    ("user-colleague", "user", "user_or_team", COLLEAGUE, False),
    ("bu-colleague", "business_unit", "user_or_team", COLLEAGUE, True),
    ("bu-below", "business_unit", "user_or_team", BELOW, False),
    ("parent-child-below", "parent_child", "user_or_team", BELOW, True),
    ("parent-child-elsewhere", "parent_child", "user_or_team", ELSEWHERE, False),
    ("org-elsewhere", "organization", "user_or_team", ELSEWHERE, True),
    ("user-depth-org-owned-entity", "user", "organization", ELSEWHERE, True),
    ("none-org-owned-entity", "none", "organization", ELSEWHERE, False),
    ("user-depth-unowned-entity", "user", "none", Ownership(None, None, None), True),
    ("bu-business-owned", "business_unit", "business", Ownership(None, None, "sales"), True),
    ("user-business-owned", "user", "business", Ownership(None, None, "sales"), False),
]


@pytest.mark.parametrize("depth,ownership,record,allowed", [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
@pytest.mark.parametrize("op", list(Operation), ids=[o.value for o in Operation])
def test_record_access_table(op: Operation, depth: str, ownership: str, record: Ownership, allowed: bool) -> None:
    assert may(actor(depth), op, "account", ownership, record) is allowed


def test_disabled_user_may_nothing() -> None:
    assert not may(actor("organization", enabled=False), Operation.READ, "account", "user_or_team", MINE)


def test_wildcard_and_max_over_roles() -> None:
    privs = combine_privileges(
        [
            {"*": {"read": "user"}},
            {"account": {"read": "business_unit", "write": "bogus"}},
            {"*": {"write": "organization"}},
        ]
    )
    a = Actor("u1", "sales", privileges=privs)
    assert a.depth("account", Operation.READ) is Depth.BUSINESS_UNIT
    assert a.depth("contact", Operation.READ) is Depth.USER
    assert a.depth("account", Operation.WRITE) is Depth.ORGANIZATION
    assert a.depth("account", Operation.DELETE) is Depth.NONE


def test_default_owner_and_subtree() -> None:
    assert bu_subtree(PARENTS, "sales") == {"sales", "east"}
    assert bu_subtree(PARENTS, "root") == set(PARENTS)
    assert default_ownership(actor("user"), "user_or_team") == MINE
    assert default_ownership(actor("user"), "business") == Ownership(None, None, "sales")


depths = st.sampled_from(["none", "user", "business_unit", "parent_child", "organization"])
records = st.builds(
    Ownership,
    st.sampled_from(["u1", "u2", "t1", "t2"]),
    st.sampled_from(["user", "team"]),
    st.sampled_from(list(PARENTS)),
)


@given(depths, depths, records, st.sampled_from(["user_or_team", "business", "organization", "none"]))
def test_deeper_grants_reach_at_least_as_far_and_scope_agrees(d1: str, d2: str, rec: Ownership, ownership: str) -> None:
    lo, hi = sorted([Depth.parse(d1), Depth.parse(d2)])
    a_lo, a_hi = actor(lo.name.lower()), actor(hi.name.lower())
    if may(a_lo, Operation.READ, "account", ownership, rec):
        assert may(a_hi, Operation.READ, "account", ownership, rec)
    # The SQL-side read scope selects exactly what the record check allows.
    scope = read_scope(a_hi, "account", ownership)
    in_scope = (
        scope.everything
        or rec.business_unit_id in scope.business_units
        or (rec.owner_type == "user" and rec.owner_id in scope.user_owners)
        or (rec.owner_type == "team" and rec.owner_id in scope.team_owners)
    )
    assert in_scope == may(a_hi, Operation.READ, "account", ownership, rec)


META = EntityMeta(
    "contact",
    "user_or_team",
    {
        "lastname": {"type": "string", "required": True, "max_length": 5},
        "age": {"type": "int"},
        "score": {"type": "decimal"},
        "vip": {"type": "bool"},
        "born": {"type": "datetime"},
        "account": {"type": "lookup", "target": "account"},
        "tier": {"type": "choice", "options": [1, 2]},
    },
)

VALIDATION = [
    (
        "ok-create",
        {"lastname": "Li", "age": 3, "score": 1.5, "vip": True, "born": "2020-01-02T03:04:05+00:00", "tier": 2},
        True,
        None,
    ),
    ("missing-required", {"age": 3}, True, "lastname"),
    ("required-null-update", {"lastname": None}, False, "lastname"),
    ("required-absent-update-ok", {"age": 3}, False, None),
    ("unknown-attribute", {"lastname": "Li", "nope": 1}, True, "nope"),
    ("int-bool", {"age": True}, False, "age"),
    ("int-str", {"age": "3"}, False, "age"),
    ("decimal-bad", {"score": "abc"}, False, "score"),
    ("string-too-long", {"lastname": "abcdefg"}, False, "lastname"),
    ("datetime-bad", {"born": "yesterday"}, False, "born"),
    ("lookup-not-str", {"account": 5}, False, "account"),
    ("choice-not-allowed", {"tier": 9}, False, "tier"),
    # bug #14.4: numeric strings are refused on write, never stored and then left unmatched
    ("decimal-numeric-string", {"score": "1000.00"}, False, "score"),
    ("choice-numeric-string", {"tier": "1"}, False, "tier"),
    ("decimal-bool", {"score": False}, False, "score"),
]


@pytest.mark.parametrize("fields,creating,bad_field", [r[1:] for r in VALIDATION], ids=[r[0] for r in VALIDATION])
def test_validation_table(fields: dict, creating: bool, bad_field: str | None) -> None:
    err, _, _ = check_fields(META, fields, creating=creating)
    assert (err.field if err else None) == bad_field


def test_validation_lists_lookups() -> None:
    err, refs, _ = check_fields(META, {"account": "a1"}, creating=False)
    assert err is None and [(r.field, r.target, r.id) for r in refs] == [("account", "account", "a1")]


@pytest.mark.parametrize(
    "raw,stored",
    [
        ("2024-01-01T23:00:00-05:00", "2024-01-02T04:00:00.000000Z"),
        ("2024-01-02T01:00:00Z", "2024-01-02T01:00:00.000000Z"),
        ("2024-01-02T01:00:00.5+01:00", "2024-01-02T00:00:00.500000Z"),
        ("2024-01-02", "2024-01-02T00:00:00.000000Z"),  # no offset: UTC
    ],
    ids=["offset", "zulu", "fraction", "date-only"],
)
def test_datetimes_are_stored_as_utc_instants(raw: str, stored: str) -> None:
    """Bug #14.4: a custom datetime is normalized on write, so text order is instant order."""
    err, _, out = check_fields(META, {"born": raw}, creating=False)
    assert err is None and out == {"born": stored}


QUERY_VALUES = [
    ("int", "int", "42", 42),
    ("int-bad", "int", "4.2", ValueError),
    ("decimal", "decimal", "1e3", Decimal(1000)),
    ("decimal-nan", "decimal", "NaN", ValueError),
    ("decimal-bad", "decimal", "lots", ValueError),
    ("bool", "bool", "false", False),
    ("bool-bad", "bool", "yes", ValueError),
    ("string", "string", "Rome", "Rome"),
    ("choice", "choice", "3", 3),
    ("datetime", "datetime", "2024-01-01T23:00:00-05:00", "2024-01-02T04:00:00.000000Z"),
]


@pytest.mark.parametrize("kind,raw,expected", [r[1:] for r in QUERY_VALUES], ids=[r[0] for r in QUERY_VALUES])
def test_query_value_table(kind: str, raw: str, expected: object) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError):
            query_value(kind, raw)
    else:
        assert query_value(kind, raw) == expected
