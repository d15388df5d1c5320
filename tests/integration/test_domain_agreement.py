"""One table, every reader: the same records and filters through profile-service's validation,
conflict-service's write validation, publish-service's Python evaluator and SQL compiler
(PostgreSQL as the oracle) and the records API's query, with the same answers; and the same
records through the access rule as the records API, the buckets and the reference see it."""

from __future__ import annotations

from typing import Any

import pytest

from conflict_service.record_store import attr_equals as _attr_equals
from conflict_service.validation import EntityMeta as RecordsMeta
from conflict_service.validation import check_fields
from offsync_shared import db
from offsync_shared.domain.org import Actor, Depth, Operation, Ownership, bu_subtree, may, read_scope
from offsync_stack.testing import InfraEnv
from profile_service.validation import EntityMeta as ProfileMeta
from profile_service.validation import check_items
from publish_service.rules import buckets, conditions, reference
from publish_service.rules.buckets import ProfileItem
from publish_service.rules.model import OrgModel, Record, Role, Team, User

pytestmark = pytest.mark.integration

ATTRS: dict[str, dict[str, Any]] = {
    "name": {"type": "string"},
    "revenue": {"type": "decimal"},
    "tier": {"type": "choice"},
    "due": {"type": "datetime"},
}

# (id, attributes written, condition, holds) — holds None: the write is refused (never stored).
TABLE: list[tuple[str, dict[str, Any], dict[str, Any], bool | None]] = [
    ("eq-ignores-case", {"name": "Contoso"}, {"attribute": "name", "operator": "eq", "value": "contoso"}, True),
    ("ne-ignores-case", {"name": "Contoso"}, {"attribute": "name", "operator": "ne", "value": "CONTOSO"}, False),
    (
        "begins-ignores-case",
        {"name": "Contoso"},
        {"attribute": "name", "operator": "begins-with", "value": "con"},
        True,
    ),
    ("ends-ignores-case", {"name": "Contoso"}, {"attribute": "name", "operator": "ends-with", "value": "OSO"}, True),
    ("like-ignores-case", {"name": "Contoso Ltd"}, {"attribute": "name", "operator": "like", "value": "%LTD"}, True),
    ("like-escaped", {"name": "50% off"}, {"attribute": "name", "operator": "like", "value": "50\\%%"}, True),
    ("in-ignores-case", {"name": "École"}, {"attribute": "name", "operator": "in", "value": ["école", "x"]}, True),
    ("decimal-gt", {"revenue": 1000.0}, {"attribute": "revenue", "operator": "gt", "value": 100}, True),
    ("decimal-string-refused", {"revenue": "1000.00"}, {"attribute": "revenue", "operator": "gt", "value": 100}, None),
    ("choice-string-refused", {"tier": "1"}, {"attribute": "tier", "operator": "eq", "value": 1}, None),
    ("choice-eq", {"tier": 1}, {"attribute": "tier", "operator": "eq", "value": 1}, True),
    (
        "datetime-instants",  # 23:00-05:00 is 04:00Z the next day: later than 01:00Z
        {"due": "2024-01-01T23:00:00-05:00"},
        {"attribute": "due", "operator": "lt", "value": "2024-01-02T01:00:00Z"},
        False,
    ),
    (
        "datetime-eq-across-offsets",
        {"due": "2024-01-01T23:00:00-05:00"},
        {"attribute": "due", "operator": "eq", "value": "2024-01-02T05:00:00+01:00"},
        True,
    ),
    (
        "datetime-in",
        {"due": "2024-01-02T04:00:00Z"},
        {"attribute": "due", "operator": "in", "value": ["2024-01-01T23:00:00-05:00"]},
        True,
    ),
]


@pytest.mark.parametrize("rid,written,cond,holds", TABLE, ids=[r[0] for r in TABLE])
async def test_filters_mean_the_same_everywhere(
    fresh_env: InfraEnv, rid: str, written: dict[str, Any], cond: dict[str, Any], holds: bool | None
) -> None:
    # profile-service accepts the filter and stores it normalized
    meta = ProfileMeta("memo", "organization", ATTRS, offline_enabled=True)
    items, problems = check_items([{"entity": "memo", "filter": {"kind": "custom", "condition": cond}}], {"memo": meta})
    assert problems == []
    stored_cond = items[0]["filter"]["condition"]
    # conflict-service's write validation stores the record (or refuses it)
    err, _, stored = check_fields(RecordsMeta("memo", "organization", ATTRS), written, creating=True)
    if holds is None:
        assert err is not None and err.field in written
        return
    assert err is None
    record = Record("memo", rid, 1, attributes=stored)
    # publish-service's Python evaluator
    assert conditions.holds(stored_cond, record, {}) is holds
    conn = await db.connect(fresh_env.pg_dsn)
    try:
        await conn.execute(
            "CREATE TEMP TABLE recs (record_id text, owner_id text, business_unit_id text, attributes jsonb)"
        )
        await conn.execute("INSERT INTO recs VALUES ($1, NULL, NULL, $2)", rid, stored)
        # publish-service's SQL compiler
        sql = f"SELECT record_id FROM recs r WHERE {conditions.to_sql(stored_cond, 'r', {})}"
        assert bool(await conn.fetch(sql)) is holds
        # the records API's query (equality on the attribute), where the filter is an equality
        if stored_cond["operator"] == "eq":
            args: list[Any] = []

            def arg(v: Any) -> str:
                args.append(v)
                return f"${len(args)}"

            name = stored_cond["attribute"]
            where = _attr_equals(ATTRS[name], arg(name), str(cond["value"]), arg, f"attr.{name}")
            assert bool(await conn.fetch(f"SELECT record_id FROM recs WHERE {where}", *args)) is holds
    finally:
        await conn.close()


BU_PARENT = {"root": None, "sales": "root", "east": "sales", "ops": "root"}
RECORDS = [
    Record("account", "own-elsewhere", 1, "alice", "user", "ops"),
    Record("account", "team-elsewhere", 1, "t1", "team", "ops"),
    Record("account", "bob-sales", 1, "bob", "user", "sales"),
    Record("account", "bob-east", 1, "bob", "user", "east"),
    Record("account", "bob-ops", 1, "bob", "user", "ops"),
]


@pytest.mark.parametrize("depth", [d.wire for d in Depth])
def test_access_means_the_same_everywhere(depth: str) -> None:
    """The records API (may, read_scope), the buckets and the reference evaluator read one rule."""
    org = OrgModel(
        users={"alice": User("alice", "sales", role_ids=("r",)), "bob": User("bob", "sales")},
        teams={"t1": Team("t1", "sales", ("alice",))},
        bu_parent=BU_PARENT,
        roles={"r": Role("r", {"account": {"read": depth}}, read_offline_profile=True)},
        ownership={"account": "user_or_team"},
    )
    records_api = Actor(
        "alice",
        "sales",
        frozenset({"t1"}),
        bu_subtree(BU_PARENT, "sales"),
        {"account": {Operation.READ: Depth.parse(depth)}},
    )
    scope = read_scope(records_api, "account", "user_or_team")
    readable = set()
    for r in RECORDS:
        owner = Ownership(r.owner_id, r.owner_type, r.business_unit_id)
        assert may(records_api, Operation.READ, "account", "user_or_team", owner) == scope.holds(owner)
        if scope.holds(owner):
            readable.add(("account", r.id))
    items = [ProfileItem("account", {"kind": "all"})]
    delivered = set().union(*buckets.materialize(buckets.plan_user(org, items, "alice"), RECORDS).values())
    assert delivered == readable == reference.user_set(org, items, "alice", RECORDS)
