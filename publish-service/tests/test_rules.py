"""The bucket planner against the naive reference (hypothesis) and table-driven rule cases."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from publish_orgs import USERS, orgs, profiles, records

from offsync_shared.domain.org import Ownership, read_scope
from publish_service.rules import buckets, conditions, reference
from publish_service.rules.buckets import ProfileItem
from publish_service.rules.model import OrgModel, Record, Role, Team, User


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(org=orgs(), items=profiles(), recs=records())
def test_bucket_plan_yields_exactly_the_reference_set_for_every_user(
    org: OrgModel, items: list[ProfileItem], recs: list[Record]
) -> None:
    for u in USERS:
        defs = buckets.plan_user(org, items, u)
        content = buckets.materialize(defs, recs)
        got = set().union(*content.values()) if content else set()
        assert got == reference.user_set(org, items, u, recs), u


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(org=orgs(), items=profiles(), recs=records())
def test_a_device_receives_what_the_records_api_lets_its_user_read_within_the_filter(
    org: OrgModel, items: list[ProfileItem], recs: list[Record]
) -> None:
    """Issue #14's property: for random orgs, roles and records, the set a device receives
    equals the records the records API lets the user read (its SQL scope, ``read_scope``),
    intersected with the profile's filter (items without relationships)."""
    own_items = [ProfileItem(it.entity, it.filter) for it in items]
    for u in USERS:
        defs = buckets.plan_user(org, own_items, u)
        got = set().union(*buckets.materialize(defs, recs).values()) if defs else set()
        want: set[tuple[str, str]] = set()
        if org.can_use_offline(u):
            actor = org.actor(u)
            for it in own_items:
                scope = read_scope(actor, it.entity, org.entity_ownership(it.entity))
                want |= {
                    (r.entity, r.id)
                    for r in recs
                    if r.entity == it.entity
                    and not r.deleted
                    and scope.holds(Ownership(r.owner_id, r.owner_type, r.business_unit_id))
                    and reference.in_filter(org, u, it.filter, r)
                }
        assert got == want, u


def _org(depth: str = "organization", ownership: str = "user_or_team") -> OrgModel:
    return OrgModel(
        users={
            "u1": User("u1", "b1", role_ids=("r",), language=1033),
            "u2": User("u2", "b2", manager_id="u1", role_ids=("r",)),
        },
        teams={"t1": Team("t1", "b1", ("u1",))},
        bu_parent={"root": None, "b1": "root", "b2": "b1"},
        roles={"r": Role("r", {"*": {"read": depth}}, read_offline_profile=True)},
        ownership={"account": ownership},
    )


PLAN_CASES = [
    ("all-org-read-one-shared-bucket", {"kind": "all"}, "organization", [("all", "org")]),
    (
        "all-bu-read-per-bu-bucket-plus-own-records-elsewhere",
        {"kind": "all"},
        "business_unit",
        [("all", "bu"), ("all", "owner_user_out"), ("all", "owner_team_out")],
    ),
    ("all-user-read-user-and-team-buckets", {"kind": "all"}, "user", [("all", "owner_user"), ("all", "owner_team")]),
    ("user-records-with-user-read-fold", {"kind": "other", "user": True}, "user", [("owner_user", "org")]),
    (
        "user-and-bu-records-split-disjoint",
        {"kind": "other", "user": True, "business_unit": True},
        "organization",
        [("owner_user_not_bu", "org"), ("bu", "org")],
    ),
    (
        "user-and-bu-records-with-bu-read-own-records-elsewhere-in-reach",
        {"kind": "other", "user": True, "business_unit": True},
        "business_unit",
        [("owner_user_not_bu", "org"), ("bu", "org")],
    ),
    (
        "user-and-bu-records-with-user-read-fold",
        {"kind": "other", "user": True, "business_unit": True},
        "user",
        [("owner_user_not_bu", "org"), ("bu", "owner_user"), ("bu", "owner_team")],
    ),
    ("bu-records-with-subtree-read-fold", {"kind": "other", "business_unit": True}, "parent_child", [("bu", "org")]),
    ("related-only-without-relationships", {"kind": "related"}, "organization", []),
    ("no-read-no-buckets", {"kind": "all"}, "none", []),
    (
        "custom-userid",
        {"kind": "custom", "condition": {"attribute": "ownerid", "operator": "eq-userid"}},
        "organization",
        [("custom", "org")],
    ),
]


OWN_ELSEWHERE = [
    Record("account", "mine", 1, "u1", "user", "b2"),  # owned by u1, in another business unit
    Record("account", "team", 1, "t1", "team", "root"),  # owned by u1's team, elsewhere
    Record("account", "theirs", 1, "u2", "user", "b2"),  # neither: out of reach below parent_child
]


@pytest.mark.parametrize(
    "depth,expected",
    [
        ("user", {"mine", "team"}),
        ("business_unit", {"mine", "team"}),
        ("parent_child", {"mine", "team", "theirs"}),  # b2 is below b1
        ("organization", {"mine", "team", "theirs"}),
    ],
)
@pytest.mark.parametrize("filt", [{"kind": "all"}, {"kind": "other", "user": True, "team": True}], ids=["all", "mine"])
def test_own_records_outside_the_business_unit_reach_the_device(depth: str, expected: set[str], filt: dict) -> None:
    """Bug #14.1: the records API lets a user read what they (or their teams) own wherever it
    sits; the buckets (and the reference evaluator) must deliver exactly that too."""
    org = _org(depth)
    wanted = {(r.entity, r.id) for r in OWN_ELSEWHERE if r.id in expected}
    if filt["kind"] == "other":
        wanted = {k for k in wanted if k[1] != "theirs"}
    defs = buckets.plan_user(org, [ProfileItem("account", filt)], "u1")
    got = set().union(*buckets.materialize(defs, OWN_ELSEWHERE).values())
    assert got == wanted
    assert reference.user_set(org, [ProfileItem("account", filt)], "u1", OWN_ELSEWHERE) == wanted


@pytest.mark.parametrize("filt,depth,expected", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_plan_shapes(filt: dict, depth: str, expected: list[tuple[str, str]]) -> None:
    defs = buckets.plan_user(_org(depth), [ProfileItem("account", filt)], "u1")
    assert sorted((b.filter["k"], b.access) for b in defs) == sorted(expected)


def test_users_with_equal_parameters_share_buckets() -> None:
    org = _org("business_unit")
    org.users["u2"] = User("u2", "b1", role_ids=("r",))
    items = [ProfileItem("account", {"kind": "all"})]

    def shared(user: str) -> list[str]:  # the business unit's bucket; own records elsewhere are per user
        return [b.id for b in buckets.plan_user(org, items, user) if b.access == "bu"]

    assert len(shared("u1")) == 1 and shared("u1") == shared("u2")


def test_custom_bucket_parameters_are_only_the_operands_used() -> None:
    org = _org()
    cond = {
        "and": [{"attribute": "lang", "operator": "eq-userlanguage"}, {"attribute": "n", "operator": "gt", "value": 1}]
    }
    (b,) = buckets.plan_user(org, [ProfileItem("account", {"kind": "custom", "condition": cond})], "u1")
    assert dict(b.params) == {"c_lang": 1033}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(org=orgs(), items=profiles())
def test_the_items_name_every_link_index_a_plan_follows(org: OrgModel, items: list[ProfileItem]) -> None:
    """The first copy builds the link indexes it knows from the profile's items alone: every one a
    user's plan follows is among them."""
    known = buckets.item_link_indexes(items)
    for u in USERS:
        planned = buckets.link_indexes(buckets.plan_user(org, items, u))
        assert planned.items() <= known.items(), u


def test_relationship_cycle_terminates() -> None:
    org = _org()
    org.ownership["contact"] = "user_or_team"
    items = [
        ProfileItem(
            "account",
            {"kind": "other", "user": True},
            ({"entity": "contact", "attribute": "parent", "side": "related"},),
        ),
        ProfileItem("contact", {"kind": "related"}, ({"entity": "account", "attribute": "parent", "side": "self"},)),
    ]
    defs = buckets.plan_user(org, items, "u1")
    # account (base) -> contacts of it; the way back to account revisits an entity and stops.
    assert sorted(buckets.depth_of(b) for b in defs) == [0, 1]


R = Record("account", "a1", 1, "u1", "user", "b1", {"name": "abc", "n": 2, "flag": True, "ref": "u2", "none": None})
P = {"user": "u1", "teams": ["t1"], "hier": ["u1", "u2"], "hierall": ["t1", "u1", "u2"], "bu": "b1", "lang": 1033}
LEAF_CASES = [
    ("eq-str", "name", "eq", "abc", True),
    ("eq-type-strict", "n", "eq", "2", False),
    ("eq-bool-not-int", "flag", "eq", 1, False),
    ("ne-null-false", "missing", "ne", "x", False),
    ("ne", "name", "ne", "x", True),
    ("gt-num", "n", "gt", 1, True),
    ("gt-mixed-type", "n", "gt", "a", False),
    ("le-str", "name", "le", "abd", True),
    ("like", "name", "like", "a%c", True),
    ("like-underscore", "name", "like", "a_", False),
    ("not-like", "name", "not-like", "x%", True),
    ("in", "n", "in", [1, 2], True),
    ("not-in-null", "missing", "not-in", [1], False),
    ("null-json-null", "none", "null", None, True),
    ("not-null", "name", "not-null", None, True),
    ("begins", "name", "begins-with", "ab", True),
    ("not-begin", "name", "not-begin-with", "ab", False),
    ("ends", "name", "ends-with", "bc", True),
    ("not-end", "name", "not-end-with", "x", True),
    ("eq-userid-owner", "ownerid", "eq-userid", None, True),
    ("ne-userid", "ref", "ne-userid", None, True),
    ("hierarchy", "ref", "eq-useroruserhierarchy", None, True),
    ("userteams", "ref", "eq-userteams", None, False),
    ("businessid", "owningbusinessunit", "eq-businessid", None, True),
    ("ne-businessid-null", "missing", "ne-businessid", None, False),
]


@pytest.mark.parametrize("attr,op,value,expected", [c[1:] for c in LEAF_CASES], ids=[c[0] for c in LEAF_CASES])
def test_leaf_operators(attr: str, op: str, value: object, expected: bool) -> None:
    cond = {"attribute": attr, "operator": op, "value": value}
    assert conditions.holds(cond, R, P) is expected


@pytest.mark.parametrize(
    "cond",
    [
        {"attribute": "x", "operator": "bogus"},
        {"and": [{"or": [{"and": [{"or": [{"attribute": "x", "operator": "null"}]}]}]}]},
        {"attribute": "x", "operator": "in", "value": 3},
        {"attribute": "createdon", "operator": "like", "value": "2026%"},
        {"attribute": "modifiedon", "operator": "gt", "value": "yesterday"},
        {"attribute": "createdon", "operator": "eq-userid"},
    ],
    ids=["unknown-operator", "four-levels", "in-needs-list", "like-on-datetime", "bad-instant", "user-op-on-datetime"],
)
def test_invalid_conditions_are_rejected(cond: dict) -> None:
    """(Three nested groups with leaves inside are valid: see the test below.)"""
    with pytest.raises(conditions.ConditionError):
        conditions.params_used(cond)


def test_three_levels_of_groups_are_accepted() -> None:
    """The same limit as profile-service's: groups nest 3 deep; leaves do not count as a level."""
    cond = {
        "and": [{"attribute": "x", "operator": "null"}, {"or": [{"and": [{"attribute": "x", "operator": "null"}]}]}]
    }
    conditions.params_used(cond)


def test_rules_package_is_pure() -> None:
    banned = {"asyncpg", "aiokafka", "faust", "fastapi", "websockets"}
    root = pathlib.Path(buckets.__file__).parent
    for f in root.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] in banned for n in names), f
