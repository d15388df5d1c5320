"""publish-service over real PostgreSQL and the real broker: publish, incremental put/remove,
org changes, republish diff and redelivery, each checked against the naive reference."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from publish_harness import harness

from offsync_shared import metrics
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

ACCOUNTS = [  # id, owner (type, id), bu
    ("a1", ("user", "u1"), "b1"),
    ("a2", ("user", "u2"), "b2"),
    ("a3", ("team", "t1"), "b1"),
    ("a4", ("user", "u3"), "b1"),
    ("a5", ("user", "u4"), "root"),
    ("a6", ("team", "t2"), "b2"),
]
CONTACTS = [("c1", "a1"), ("c2", "a2"), ("c3", "a3"), ("c4", "a5"), ("c5", None), ("c6", "a4")]


async def seed_org(c: asyncpg.Connection) -> None:
    await c.execute("""
        INSERT INTO admin.business_units(id, name, parent_id) VALUES ('root', 'Root', NULL), ('b1', 'B1', 'root'), ('b2', 'B2', 'b1');
        INSERT INTO admin.users(id, name, business_unit_id, manager_id, language) VALUES
            ('u1', 'U1', 'b1', NULL, 1033), ('u2', 'U2', 'b2', 'u1', 1036), ('u3', 'U3', 'b1', NULL, 1033), ('u4', 'U4', 'root', NULL, NULL);
        INSERT INTO admin.teams(id, name, business_unit_id) VALUES ('t1', 'T1', 'b1'), ('t2', 'T2', 'b2');
        INSERT INTO admin.team_members VALUES ('t1', 'u1'), ('t1', 'u3'), ('t2', 'u2');
        INSERT INTO admin.roles(id, name, read_offline_profile, privileges) VALUES
            ('sales', 'Sales', true, '{"*": {"read": "organization"}}'),
            ('bu', 'BU reader', true, '{"account": {"read": "business_unit"}, "contact": {"read": "parent_child"}, "product": {"read": "user"}}'),
            ('none', 'No offline', false, '{"*": {"read": "organization"}}');
        INSERT INTO admin.user_roles VALUES ('u1', 'sales'), ('u2', 'bu'), ('u3', 'bu'), ('u4', 'none');
        INSERT INTO admin.entities(logical_name, display_name, ownership, offline_enabled) VALUES
            ('account', 'Account', 'user_or_team', true), ('contact', 'Contact', 'user_or_team', true), ('product', 'Product', 'organization', true);
    """)


ITEMS_V1: list[dict[str, Any]] = [
    {"entity": "account", "filter": {"kind": "other", "user": True, "team": True, "business_unit": False}},
    {
        "entity": "contact",
        "filter": {"kind": "related"},
        "relationships": [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}],
    },
    {"entity": "product", "filter": {"kind": "all"}},
]


async def test_publish_incremental_org_changes_republish_and_redelivery(fresh_env: InfraEnv) -> None:
    async with harness(fresh_env) as h:
        async with h.pool.acquire() as c:
            await seed_org(c)
        for rid, owner, bu in ACCOUNTS:
            await h.put_record("account", rid, owner=owner, bu=bu, attrs={"name": rid.upper()})
        for rid, parent in CONTACTS:
            await h.put_record(
                "contact", rid, owner=("user", "u1"), bu="b2", attrs={"parentcustomerid": parent} if parent else {}
            )
        for rid in ("p1", "p2"):
            await h.put_record("product", rid, attrs={"name": rid})

        await h.publish("P", 1, ITEMS_V1, ["u1", "u2", "u3", "u4"])
        await h.caught_up()
        await h.assert_matches_reference()
        sets = await h.user_sets()
        assert ("contact", "c1") in sets["u1"] and ("account", "a1") in sets["u1"]
        assert "u4" not in sets  # no read_offline_profile: no offline data
        async with h.pool.acquire() as c:
            assert {r["user_id"] for r in await c.fetch("SELECT user_id FROM sync.user_profiles")} == {"u1", "u2", "u3"}

        # Incremental: update, owner change, BU change, create, relationship move, delete.
        before = await h.max_op_id()
        await h.put_record("account", "a1", owner=("user", "u2"), bu="b1", attrs={"name": "A1 moved"})
        await h.put_record("account", "a7", owner=("team", "t1"), bu="b2", attrs={"name": "A7"})
        await h.put_record("contact", "c2", owner=("user", "u1"), bu="b2", attrs={"parentcustomerid": "a7"})
        await h.put_record("account", "a3", owner=("team", "t1"), bu="b1", deleted=True)
        await h.put_record("account", "a4", owner=("user", "u3"), bu="b2", attrs={"name": "A4"})
        await h.caught_up()
        await h.assert_matches_reference()
        assert await h.max_op_id() > before

        # An update no user can see touches nothing.
        before = await h.max_op_id()
        await h.put_record("account", "a5", owner=("user", "u4"), bu="root", attrs={"name": "invisible"})
        await h.caught_up()
        assert await h.max_op_id() == before

        # Org changes: team membership, user moves BU.
        async with h.pool.acquire() as c:
            await c.execute("INSERT INTO admin.team_members VALUES ('t1', 'u2')")
            await c.execute("UPDATE admin.users SET business_unit_id = 'b1' WHERE id = 'u3'")
        await h.team_changed("t1")
        await h.user_changed("u3")
        await h.caught_up()
        await h.assert_matches_reference()

        # Republish: accounts unchanged (buckets and op ids kept), products now custom.
        async with h.pool.acquire() as c:
            kept = {
                (r["bucket_id"], r["record_id"]): r["op_id"]
                for r in await c.fetch("SELECT * FROM sync.bucket_ops WHERE entity = 'account'")
            }
        items_v2 = [
            ITEMS_V1[0],
            ITEMS_V1[1],
            {
                "entity": "product",
                "filter": {"kind": "custom", "condition": {"attribute": "name", "operator": "eq", "value": "p1"}},
            },
        ]
        await h.publish("P", 2, items_v2, ["u1", "u2"])
        await h.caught_up()
        await h.assert_matches_reference()
        async with h.pool.acquire() as c:
            now = {
                (r["bucket_id"], r["record_id"]): r["op_id"]
                for r in await c.fetch("SELECT * FROM sync.bucket_ops WHERE entity = 'account'")
            }
            assert await c.fetchval("SELECT count(*) FROM sync.user_profiles WHERE user_id = 'u3'") == 0
            notes = await c.fetchval(
                "SELECT count(*) FROM sync.outbox WHERE convert_from(value, 'UTF8') LIKE '%user.buckets_changed%'"
            )
        assert notes > 0
        u1_accounts = {k for k in now if k in kept}
        assert u1_accounts and all(now[k] == kept[k] for k in u1_accounts)

        # Idempotency: every event delivered again, in order and reversed, writes no op.
        before = await h.max_op_id()
        await h.redeliver_all()
        await h.redeliver_all(reverse=True)
        await h.caught_up()
        assert await h.max_op_id() == before
        await h.assert_matches_reference()

        # A poison publish (unknown operator) is dead-lettered; events after it still apply.
        dead = metrics.DEAD_LETTERS.labels("publish-service")._value.get()
        await h.publish(
            "P",
            3,
            [{"entity": "account", "filter": {"kind": "custom", "condition": {"attribute": "x", "operator": "bogus"}}}],
            ["u1"],
        )
        await h.put_record("account", "a2", owner=("user", "u1"), bu="b2", attrs={"name": "after poison"})
        await h.caught_up()
        assert metrics.DEAD_LETTERS.labels("publish-service")._value.get() == dead + 1
        await h.assert_matches_reference()
