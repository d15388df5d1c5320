"""The pure profile rules: the seed's ownership/download-filter table, every custom-filter
operator, group depth, relationships (sides, limits, cycles) and sync intervals."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profile_service import validation as rules
from profile_service.catalogue import STANDARD_ENTITIES
from profile_service.validation import EntityMeta, check_filter

METAS = {
    e["logical_name"]: EntityMeta(e["logical_name"], e["ownership"], e["attributes"], offline_enabled=True)
    for e in STANDARD_ENTITIES
}
NONE_BARE = EntityMeta("note_none", "none", {}, offline_enabled=True)
NONE_ATTRS = EntityMeta("memo", "none", {"title": {"type": "string"}}, offline_enabled=True)
ENT_BY_OWNERSHIP = {
    "user_or_team": METAS["account"],
    "organization": METAS["product"],
    "business": METAS["territory"],
    "none": NONE_ATTRS,
}
CUSTOM = {"kind": "custom", "condition": {"attribute": "createdon", "operator": "not-null"}}
OTHER = lambda **f: {"kind": "other", **f}  # noqa: E731

# The seed's table, row by row: (ownership, filter, allowed?)
OWNERSHIP_TABLE = [
    ("user_or_team", {"kind": "related"}, True),
    ("user_or_team", {"kind": "all"}, True),
    ("user_or_team", OTHER(user=True), True),
    ("user_or_team", OTHER(team=True), True),
    ("user_or_team", OTHER(business_unit=True), True),
    ("user_or_team", OTHER(user=True, team=True), True),
    ("user_or_team", OTHER(user=True, team=True, business_unit=True), True),
    ("user_or_team", {"kind": "user"}, True),
    ("user_or_team", {"kind": "team"}, True),
    ("user_or_team", {"kind": "business_unit"}, True),
    ("user_or_team", OTHER(), False),
    ("user_or_team", CUSTOM, True),
    ("organization", {"kind": "related"}, True),
    ("organization", {"kind": "all"}, True),
    ("organization", OTHER(user=True), False),
    ("organization", OTHER(business_unit=True), False),
    ("organization", CUSTOM, True),
    ("business", {"kind": "related"}, True),
    ("business", {"kind": "all"}, True),
    ("business", OTHER(business_unit=True), True),
    ("business", {"kind": "business_unit"}, True),
    ("business", OTHER(user=True), False),
    ("business", OTHER(team=True), False),
    ("business", OTHER(user=True, business_unit=True), False),
    ("business", CUSTOM, True),
    ("none", {"kind": "related"}, True),
    ("none", {"kind": "all"}, False),
    ("none", OTHER(user=True), False),
    ("none", CUSTOM, True),
]


@pytest.mark.parametrize(
    ("ownership", "filt", "ok"),
    OWNERSHIP_TABLE,
    ids=[
        f"{o}-{f['kind']}-{'+'.join(k for k in ('user', 'team', 'business_unit') if f.get(k)) or '_'}-{'ok' if ok else 'refused'}"
        for o, f, ok in OWNERSHIP_TABLE
    ],
)
def test_ownership_filter_table(ownership: str, filt: dict[str, Any], ok: bool) -> None:
    problems = check_filter(ENT_BY_OWNERSHIP[ownership], filt)
    if ok:
        assert problems == []
    else:
        assert [p.code for p in problems] == ["filter_not_allowed"]
        assert "allowed" in problems[0].message  # names the allowed options


def test_none_entity_without_attributes_offers_related_only() -> None:
    assert check_filter(NONE_BARE, {"kind": "related"}) == []
    assert [p.code for p in check_filter(NONE_BARE, CUSTOM)] == ["filter_not_allowed"]


def leaf(attr: str, op: str, value: Any = None) -> dict[str, Any]:
    c: dict[str, Any] = {"attribute": attr, "operator": op}
    if value is not None:
        c["value"] = value
    return {"kind": "custom", "condition": c}


# Every operator: (entity, attribute, operator, value, expected problem code or None)
OPERATOR_TABLE = [
    ("account", "name", "eq", "Contoso", None),
    ("account", "revenue", "eq", "x", "invalid_value"),
    ("account", "name", "ne", "Contoso", None),
    ("account", "revenue", "gt", 10.5, None),
    ("account", "numberofemployees", "ge", 10, None),
    ("account", "createdon", "lt", "2024-01-01T00:00:00+00:00", None),
    ("account", "createdon", "le", "2024-01-01", None),
    ("account", "createdon", "le", "not a date", "invalid_value"),
    ("account", "creditonhold", "gt", True, "operator_type_mismatch"),
    ("account", "name", "like", "%toso%", None),
    ("account", "revenue", "like", "%1%", "operator_type_mismatch"),
    ("account", "name", "not-like", "A%", None),
    ("account", "industrycode", "in", [1, 2, 3], None),
    ("account", "industrycode", "in", [], "invalid_value"),
    ("account", "name", "not-in", ["a", "b"], None),
    ("account", "name", "not-in", "a", "invalid_value"),
    ("account", "telephone1", "null", None, None),
    ("account", "telephone1", "not-null", None, None),
    ("account", "telephone1", "null", "x", "invalid_value"),
    ("account", "ownerid", "eq-userid", None, None),
    ("account", "ownerid", "ne-userid", None, None),
    ("account", "ownerid", "eq-userteams", None, None),
    ("account", "ownerid", "eq-useroruserteams", None, None),
    ("account", "ownerid", "eq-useroruserhierarchy", None, None),
    ("account", "ownerid", "eq-useroruserhierarchyandteams", None, None),
    ("territory", "managerid", "eq-userid", None, None),
    ("territory", "managerid", "eq-userteams", None, "operator_type_mismatch"),
    ("account", "primarycontactid", "eq-userid", None, "operator_type_mismatch"),
    ("account", "owningbusinessunit", "eq-businessid", None, None),
    ("account", "owningbusinessunit", "ne-businessid", None, None),
    ("account", "ownerid", "eq-businessid", None, "operator_type_mismatch"),
    ("account", "industrycode", "eq-userlanguage", None, None),
    ("account", "name", "eq-userlanguage", None, "operator_type_mismatch"),
    ("account", "name", "begins-with", "Con", None),
    ("account", "name", "not-begin-with", "Con", None),
    ("account", "name", "ends-with", "so", None),
    ("account", "name", "not-end-with", "so", None),
    ("account", "name", "ends-with", 5, "invalid_value"),
    ("account", "nosuch", "eq", "x", "unknown_attribute"),
    ("account", "name", "contains", "x", "unknown_operator"),
    ("product", "ownerid", "eq-userid", None, "unknown_attribute"),
    ("contact", "parentcustomerid", "eq", "acc-1", None),
    ("contact", "lastname", "eq", None, "invalid_value"),
    # bug #14.4: in / not-in apply to datetimes (publish-service and docs/buckets.md support them)
    ("account", "createdon", "in", ["2024-01-01T00:00:00Z", "2024-01-02"], None),
    ("account", "createdon", "not-in", ["2024-01-01T00:00:00Z"], None),
    ("account", "createdon", "in", ["soon"], "invalid_value"),
    ("account", "revenue", "eq", "1000.00", "invalid_value"),  # numbers are JSON numbers
]


@pytest.mark.parametrize(
    ("entity", "attr", "op", "value", "code"),
    OPERATOR_TABLE,
    ids=[f"{e}.{a}-{o}-{c or 'ok'}" for e, a, o, _, c in OPERATOR_TABLE],
)
def test_operator_table(entity: str, attr: str, op: str, value: Any, code: str | None) -> None:
    problems = check_filter(METAS[entity], leaf(attr, op, value))
    assert [p.code for p in problems] == ([code] if code else [])


def test_datetime_operands_are_stored_as_utc_instants() -> None:
    """Bug #14.4: a custom datetime attribute is stored normalized (UTC), so its filter operand
    is normalized too and text order is instant order on both sides."""
    metas = {"memo": rules.EntityMeta("memo", "organization", {"due": {"type": "datetime"}}, offline_enabled=True)}
    cond = {"or": [{"attribute": "due", "operator": "lt", "value": "2024-01-01T23:00:00-05:00"}]}
    items = [{"entity": "memo", "filter": {"kind": "custom", "condition": cond}}]
    normalized, problems = rules.check_items(items, metas)
    assert problems == []
    assert normalized[0]["filter"]["condition"] == {
        "or": [{"attribute": "due", "operator": "lt", "value": "2024-01-02T04:00:00.000000Z"}]
    }


def test_every_seed_operator_is_known_and_covered() -> None:
    seed = (
        "eq ne gt ge lt le like not-like in not-in null not-null eq-userid ne-userid eq-userteams eq-useroruserteams "
        "eq-useroruserhierarchy eq-useroruserhierarchyandteams eq-businessid ne-businessid eq-userlanguage begins-with "
        "not-begin-with ends-with not-end-with"
    ).split()
    assert set(seed) == set(rules.OPERATORS)
    assert {op for _, _, op, _, code in OPERATOR_TABLE if code is None} == set(seed)


def nest(levels: int) -> dict[str, Any]:
    cond: dict[str, Any] = {"attribute": "name", "operator": "not-null"}
    for i in range(levels):
        cond = {("and", "or")[i % 2]: [cond, {"attribute": "revenue", "operator": "gt", "value": 1}]}
    return {"kind": "custom", "condition": cond}


@pytest.mark.parametrize(
    ("levels", "ok"), [(0, True), (1, True), (2, True), (3, True), (4, False)], ids=lambda v: str(v)
)
def test_groups_nest_at_most_three_levels(levels: int, ok: bool) -> None:
    codes = [p.code for p in check_filter(METAS["account"], nest(levels))]
    assert codes == ([] if ok else ["filter_too_deep"])


@pytest.mark.parametrize(
    ("filt", "code"),
    [
        ({"kind": "custom"}, "invalid_filter"),
        ({"kind": "custom", "condition": {"and": []}}, "invalid_condition"),
        ({"kind": "custom", "condition": {"and": [], "or": []}}, "invalid_condition"),
        ({"kind": "custom", "condition": []}, "invalid_condition"),
        ({"kind": "all", "extra": 1}, "invalid_filter"),
        ({"kind": 3}, "invalid_filter"),
        ({}, "invalid_filter"),
        ({"kind": "other", "user": "yes"}, "invalid_filter"),
        ({"kind": "bogus"}, "filter_not_allowed"),
    ],
    ids=[
        "no-condition",
        "empty-group",
        "two-group-keys",
        "condition-list",
        "extra-field",
        "kind-int",
        "empty",
        "flag-str",
        "unknown-kind",
    ],
)
def test_malformed_filters(filt: dict[str, Any], code: str) -> None:
    assert [p.code for p in check_filter(METAS["account"], filt)][:1] == [code]


# --- relationships ---


def test_relationship_sides_are_filled_in() -> None:
    rels, problems = rules.resolve_relationships(
        "account",
        [
            {"entity": "contact", "attribute": "primarycontactid"},
            {"entity": "contact", "attribute": "parentcustomerid"},
        ],
        ["account", "contact"],
        METAS,
    )
    assert problems == []
    assert rels == [
        {"entity": "contact", "attribute": "primarycontactid", "side": "self"},
        {"entity": "contact", "attribute": "parentcustomerid", "side": "related"},
    ]


@pytest.mark.parametrize(
    ("entity", "rel", "in_profile", "code"),
    [
        (
            "account",
            {"entity": "contact", "attribute": "primarycontactid"},
            ["account"],
            "relationship_entity_not_in_profile",
        ),
        ("account", {"entity": "account", "attribute": "parentaccountid"}, ["account"], "relationship_self"),
        (
            "account",
            {"entity": "contact", "attribute": "firstname"},
            ["account", "contact"],
            "relationship_not_a_lookup",
        ),
        ("account", {"entity": "product", "attribute": "name"}, ["account", "product"], "relationship_not_a_lookup"),
        (
            "account",
            {"entity": "contact", "attribute": "primarycontactid", "side": "related"},
            ["account", "contact"],
            "invalid_relationship",
        ),
        ("account", {"entity": "contact"}, ["account", "contact"], "invalid_relationship"),
        ("account", "contact", ["account", "contact"], "invalid_relationship"),
    ],
    ids=["not-in-profile", "self", "not-lookup", "unrelated-entity", "wrong-side", "no-attribute", "not-object"],
)
def test_relationship_rejections(entity: str, rel: Any, in_profile: list[str], code: str) -> None:
    _, problems = rules.resolve_relationships(entity, [rel], in_profile, METAS)
    assert [p.code for p in problems] == [code]


def test_at_most_15_relationships_and_no_duplicates() -> None:
    rel = {"entity": "contact", "attribute": "primarycontactid"}
    _, problems = rules.resolve_relationships("account", [rel] * 16, ["account", "contact"], METAS)
    assert [p.code for p in problems] == ["too_many_relationships"]
    _, problems = rules.resolve_relationships("account", [rel] * 2, ["account", "contact"], METAS)
    assert [p.code for p in problems] == ["duplicate_relationship"]


def item(entity: str, kind: str, *rels: tuple[str, str]) -> dict[str, Any]:
    return {
        "entity": entity,
        "filter": {"kind": kind},
        "relationships": [{"entity": e, "attribute": a} for e, a in rels],
    }


@pytest.mark.parametrize(
    ("items", "codes"),
    [
        (
            [
                item("account", "all", ("contact", "primarycontactid")),
                item("contact", "related", ("account", "parentcustomerid")),
            ],
            [],
        ),
        (
            [
                item("account", "related", ("contact", "primarycontactid")),
                item("contact", "related", ("account", "parentcustomerid")),
            ],
            ["relationship_cycle"],
        ),
        (
            [
                item("account", "related", ("task", "regardingobjectid")),
                item("task", "related", ("opportunity", "parentaccountid")),
                item("opportunity", "related", ("account", "parentaccountid")),
            ],
            ["relationship_not_a_lookup"],
        ),
        (
            [
                item("account", "related", ("contact", "primarycontactid")),
                item("contact", "related", ("account", "parentcustomerid")),
                item("opportunity", "all"),
            ],
            ["relationship_cycle"],
        ),
        ([item("task", "related", ("account", "regardingobjectid")), item("account", "other")], ["filter_not_allowed"]),
    ],
    ids=[
        "seeded-cycle-ok",
        "related-only-cycle",
        "bad-lookup-in-chain",
        "unseeded-cycle-beside-other",
        "related-chain",
    ],
)
def test_relationship_graph(items: list[dict[str, Any]], codes: list[str]) -> None:
    _, problems = rules.check_items(items, METAS)
    assert [p.code for p in problems] == codes


def test_check_items_reports_every_problem_at_once() -> None:
    metas = {
        **METAS,
        "product": EntityMeta("product", "organization", METAS["product"].attributes, offline_enabled=False),
    }
    items: list[dict[str, Any]] = [
        {"entity": "product", "filter": {"kind": "all"}},
        {"entity": "account", "filter": {"kind": "other"}, "sync_interval_minutes": 2},
        {"entity": "ghost", "filter": {"kind": "all"}},
    ]
    _, problems = rules.check_items(items, metas)
    assert sorted(p.code for p in problems) == sorted(
        ["entity_not_offline_enabled", "filter_not_allowed", "invalid_sync_interval", "unknown_entity"]
    )


@pytest.mark.parametrize(
    ("minutes", "ok"), [(4, False), (5, True), (60, True), (1440, True), (1441, False), (True, False), ("5", False)]
)
def test_sync_interval_5_minutes_to_1_day(minutes: Any, ok: bool) -> None:
    assert (rules.check_sync_interval("account", minutes) == []) is ok


def test_attribute_definitions() -> None:
    good = {
        "title": {"type": "string"},
        "account": {"type": "lookup", "target": "account"},
        "me": {"type": "lookup", "target": "user"},
    }
    assert rules.check_attributes("memo", good, ["account"]) == []
    bad = {
        "x": {"type": "blob"},
        "y": {"type": "lookup", "target": "nowhere"},
        "z": {"type": "int", "target": "account"},
    }
    assert [p.code for p in rules.check_attributes("memo", bad, ["account"])] == ["invalid_attribute"] * 3


# --- properties ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
attr_names = st.sampled_from(
    ["name", "revenue", "createdon", "ownerid", "owningbusinessunit", "industrycode", "nosuch"]
)
leaves = st.builds(
    lambda a, o, v: {"attribute": a, "operator": o, **({} if v is None else {"value": v})},
    attr_names,
    st.sampled_from([*rules.OPERATORS, "bogus"]),
    st.none() | json_values,
)
conditions = st.recursive(
    leaves,
    lambda inner: st.dictionaries(st.sampled_from(["and", "or"]), st.lists(inner, max_size=3), min_size=1, max_size=1),
    max_leaves=12,
)


def depth(c: Any) -> int:
    if isinstance(c, dict) and len(c) == 1 and ("and" in c or "or" in c):
        return 1 + max((depth(m) for m in c.get("and", c.get("or")) or []), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(ENT_BY_OWNERSHIP.values())), json_values)
def test_check_filter_never_raises_on_any_json(meta: EntityMeta, raw: Any) -> None:
    for p in check_filter(meta, raw) + check_filter(meta, {"kind": "custom", "condition": raw}):
        assert p.code and p.message


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_accepted_conditions_are_within_depth_and_well_typed(cond: Any) -> None:
    problems = check_filter(METAS["account"], {"kind": "custom", "condition": cond})
    if not problems:
        assert depth(cond) <= rules.MAX_GROUP_LEVELS
    if depth(cond) > rules.MAX_GROUP_LEVELS:
        assert problems


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["user", "team", "business_unit"]), unique=True), st.sampled_from(rules.OWNERSHIPS))
def test_other_filter_matches_reference(flags: list[str], ownership: str) -> None:
    filt = {"kind": "other", **{f: True for f in flags}}
    offered = {"user_or_team": {"user", "team", "business_unit"}, "business": {"business_unit"}}.get(ownership, set())
    expected_ok = bool(flags) and set(flags) <= offered
    assert (check_filter(ENT_BY_OWNERSHIP[ownership], filt) == []) is expected_ok


def test_rules_module_is_pure() -> None:
    tree = ast.parse(Path(rules.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"asyncpg", "aiokafka", "faust", "fastapi", "websockets"}
