"""The record-access rule: one table of (depth, record) → in reach, read by ``reaches``, by the
``Scope`` the stores turn into SQL / bucket atoms, and the ownership a create gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared.domain.org import (
    Actor,
    Depth,
    Operation,
    OwnerRequest,
    Ownership,
    OwnershipRefused,
    bu_subtree,
    combine_privileges,
    ownership_for_create,
    reaches,
    scope_at,
)

PARENTS = {"root": None, "sales": "root", "east": "sales", "ops": "root"}
ALICE = Actor("alice", "sales", frozenset({"t1"}), bu_subtree(PARENTS, "sales"))

RECORDS = {
    "own-elsewhere": Ownership("alice", "user", "ops"),
    "team-elsewhere": Ownership("t1", "team", "ops"),
    "other-team": Ownership("t2", "team", "ops"),
    "bob-sales": Ownership("bob", "user", "sales"),
    "bob-east": Ownership("bob", "user", "east"),
    "bob-ops": Ownership("bob", "user", "ops"),
}
TABLE = {
    Depth.NONE: set(),
    Depth.USER: {"own-elsewhere", "team-elsewhere"},
    Depth.BUSINESS_UNIT: {"own-elsewhere", "team-elsewhere", "bob-sales"},
    Depth.PARENT_CHILD: {"own-elsewhere", "team-elsewhere", "bob-sales", "bob-east"},
    Depth.ORGANIZATION: set(RECORDS),
}


@pytest.mark.parametrize("depth", list(Depth), ids=lambda d: d.wire)
def test_access_table(depth: Depth) -> None:
    """Bug #14.1: own (and own teams') records are in reach at every depth above none."""
    got = {k for k, r in RECORDS.items() if reaches(ALICE, depth, "user_or_team", r)}
    assert got == TABLE[depth]
    scope = scope_at(ALICE, depth, "user_or_team")
    assert {k for k, r in RECORDS.items() if scope.holds(r)} == TABLE[depth]


@pytest.mark.parametrize("ownership", ["organization", "none"])
def test_unowned_entities_are_all_in_reach_above_none(ownership: str) -> None:
    assert all(reaches(ALICE, Depth.USER, ownership, r) for r in RECORDS.values())
    assert not any(reaches(ALICE, Depth.NONE, ownership, r) for r in RECORDS.values())


@given(
    st.sampled_from(list(Depth)),
    st.sampled_from(["alice", "bob", "t1", "t2", None]),
    st.sampled_from(["user", "team", None]),
    st.sampled_from(["root", "sales", "east", "ops", None]),
    st.sampled_from(["user_or_team", "business", "organization", "none"]),
)
def test_scope_equals_reaches(depth: Depth, owner: str | None, kind: str | None, bu: str | None, own: str) -> None:
    r = Ownership(owner, kind, bu)
    assert scope_at(ALICE, depth, own).holds(r) == reaches(ALICE, depth, own, r)


def test_privileges_combine_to_the_deepest_grant() -> None:
    privs = combine_privileges([{"account": {"read": "user"}}, {"account": {"read": "parent_child"}}, {"*": "bad"}])
    assert privs == {"account": {Operation.READ: Depth.PARENT_CHILD}}


UNITS = {("user", "carol"): "east", ("team", "t1"): "sales"}
CREATE = [
    ("default", None, Ownership("alice", "user", "sales")),
    ("owner-unit-follows", OwnerRequest("carol"), Ownership("carol", "user", "east")),
    ("team-owner", OwnerRequest("t1", "team"), Ownership("t1", "team", "sales")),
    ("unit-matches-owner", OwnerRequest("carol", "user", "east"), Ownership("carol", "user", "east")),
    ("unit-differs", OwnerRequest("carol", "user", "sales"), "business_unit_id"),
    ("unit-without-owner-differs", OwnerRequest(None, "user", "east"), "business_unit_id"),
    ("unit-without-owner-matches", OwnerRequest(None, "user", "sales"), Ownership("alice", "user", "sales")),
    ("unknown-owner", OwnerRequest("ghost"), "owner_id"),
    ("bad-owner-type", OwnerRequest("carol", "group"), "owner_type"),
]


@pytest.mark.parametrize("request_,expected", [c[1:] for c in CREATE], ids=[c[0] for c in CREATE])
def test_ownership_for_create(request_: OwnerRequest | None, expected: Ownership | str) -> None:
    """Bugs #14.2 and #14.3: the owning unit is the owner's; owners and units must exist."""
    if isinstance(expected, str):
        with pytest.raises(OwnershipRefused) as exc:
            ownership_for_create(ALICE, "user_or_team", request_, UNITS, {"root", "sales", "east", "ops"})
        assert exc.value.field == expected
    else:
        assert ownership_for_create(ALICE, "user_or_team", request_, UNITS, {"sales"}) == expected


def test_business_owned_records_name_an_existing_unit() -> None:
    assert ownership_for_create(ALICE, "business", OwnerRequest(None, "user", "ops"), {}, {"ops"}) == Ownership(
        None, None, "ops"
    )
    with pytest.raises(OwnershipRefused):
        ownership_for_create(ALICE, "business", OwnerRequest(None, "user", "nowhere"), {}, {"ops"})
    with pytest.raises(OwnershipRefused):
        ownership_for_create(ALICE, "organization", OwnerRequest("carol"), UNITS, set())
