"""The reference-equality property end to end: a generated org and profile, then a random
sequence of record and org changes through the broker; after every step each user's set in the
bucket store equals the naive reference, and the store's checksums/versions are consistent."""

from __future__ import annotations

import os
import random

import orjson
import pytest
from publish_harness import harness

from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

BUS = [("root", None), ("b1", "root"), ("b2", "b1"), ("b3", "root")]
USERS = [f"u{i}" for i in range(1, 7)]
TEAMS = ["t1", "t2", "t3"]
OWNERSHIP = {"account": "user_or_team", "contact": "user_or_team", "product": "organization", "territory": "business"}
DEPTHS = ["none", "user", "business_unit", "parent_child", "organization"]


def profile(rnd: random.Random) -> list[dict]:
    account_filter = rnd.choice(
        [
            {"kind": "other", "user": True, "team": True, "business_unit": False},
            {
                "kind": "custom",
                "condition": {
                    "or": [
                        {"attribute": "ownerid", "operator": "eq-useroruserhierarchy"},
                        {
                            "and": [
                                {"attribute": "rating", "operator": "ge", "value": 2},
                                {"attribute": "owningbusinessunit", "operator": "eq-businessid"},
                            ]
                        },
                    ]
                },
            },
        ]
    )
    return [
        {
            "entity": "account",
            "filter": account_filter,
            "relationships": [{"entity": "contact", "attribute": "parentcustomerid", "side": "related"}],
        },
        {
            "entity": "contact",
            "filter": rnd.choice(
                [
                    {"kind": "related"},
                    {"kind": "custom", "condition": {"attribute": "ownerid", "operator": "eq-userteams"}},
                ]
            ),
            "relationships": [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}],
        },
        {
            "entity": "product",
            "filter": {
                "kind": "custom",
                "condition": {
                    "and": [
                        {"attribute": "name", "operator": "begins-with", "value": "p"},
                        {"attribute": "modifiedon", "operator": "ge", "value": "2000-01-01T00:00:00Z"},
                    ]
                },
            },
        },
        {"entity": "territory", "filter": {"kind": "other", "business_unit": True}},
    ]


def random_record(rnd: random.Random, entity: str) -> dict:
    owned = OWNERSHIP[entity] == "user_or_team"
    otype = rnd.choice(["user", "team"]) if owned else None
    attrs: dict = {"name": rnd.choice(["p1", "q", "pz", "abc"]), "rating": rnd.randint(0, 3)}
    if entity == "contact":
        attrs["parentcustomerid"] = rnd.choice(["a0", "a1", "a2", "a3", "a4", "a5", None])
    return {
        "owner": (otype, rnd.choice(USERS if otype == "user" else TEAMS)) if owned else None,
        "bu": rnd.choice([b for b, _ in BUS]),
        "attrs": attrs,
        "deleted": rnd.random() < 0.1,
    }


async def test_incremental_state_equals_reference_after_every_change(fresh_env: InfraEnv) -> None:
    rnd = random.Random(int(os.environ.get("PUBLISH_TEST_SEED", "20261127")))
    async with harness(fresh_env) as h:
        async with h.pool.acquire() as c:
            for b, p in BUS:
                await c.execute("INSERT INTO admin.business_units(id, name, parent_id) VALUES ($1, $1, $2)", b, p)
            for i, u in enumerate(USERS):
                await c.execute(
                    "INSERT INTO admin.users(id, name, business_unit_id, manager_id, language) VALUES ($1, $1, $2, $3, $4)",
                    u,
                    rnd.choice(BUS)[0],
                    rnd.choice([None, *USERS[:i]]) if i else None,
                    1033,
                )
            for t in TEAMS:
                await c.execute(
                    "INSERT INTO admin.teams(id, name, business_unit_id) VALUES ($1, $1, $2)", t, rnd.choice(BUS)[0]
                )
                for u in rnd.sample(USERS, 2):
                    await c.execute("INSERT INTO admin.team_members VALUES ($1, $2)", t, u)
            for r in ("r1", "r2", "r3"):
                privs = {e: {"read": rnd.choice(DEPTHS[1:])} for e in OWNERSHIP}
                await c.execute(
                    "INSERT INTO admin.roles(id, name, read_offline_profile, privileges) VALUES ($1, $1, $2, $3)",
                    r,
                    r != "r3",
                    privs,
                )
            for u in USERS:
                await c.execute("INSERT INTO admin.user_roles VALUES ($1, $2)", u, rnd.choice(["r1", "r2", "r3"]))
            await c.execute("INSERT INTO admin.team_roles VALUES ('t1', 'r2')")
            for e, own in OWNERSHIP.items():
                await c.execute(
                    "INSERT INTO admin.entities(logical_name, display_name, ownership, offline_enabled) VALUES ($1, $1, $2, true)",
                    e,
                    own,
                )
        for entity in OWNERSHIP:
            for i in range(6):
                rec = random_record(rnd, entity)
                await h.put_record(
                    entity,
                    f"{entity[0]}{i}",
                    owner=rec["owner"],
                    bu=rec["bu"],
                    attrs=rec["attrs"],
                    deleted=rec["deleted"],
                )
        await h.publish("P", 1, profile(rnd), USERS[:5])
        await h.caught_up()
        await h.assert_matches_reference()

        version = 1
        sizes: list[int] = []
        for step in range(40):
            kind = rnd.choices(["record", "team", "user", "role", "republish"], weights=[10, 2, 2, 1, 1])[0]
            if kind == "record":
                entity = rnd.choice(list(OWNERSHIP))
                rec = random_record(rnd, entity)
                await h.put_record(
                    entity,
                    f"{entity[0]}{rnd.randint(0, 7)}",
                    owner=rec["owner"],
                    bu=rec["bu"],
                    attrs=rec["attrs"],
                    deleted=rec["deleted"],
                )
            elif kind == "team":
                t, u = rnd.choice(TEAMS), rnd.choice(USERS)
                async with h.pool.acquire() as c:
                    if (
                        await c.fetchval(
                            "DELETE FROM admin.team_members WHERE team_id = $1 AND user_id = $2 RETURNING 1", t, u
                        )
                        is None
                    ):
                        await c.execute("INSERT INTO admin.team_members VALUES ($1, $2)", t, u)
                await h.team_changed(t)
            elif kind == "user":
                u = rnd.choice(USERS)
                async with h.pool.acquire() as c:
                    await c.execute(
                        "UPDATE admin.users SET business_unit_id = $2, manager_id = $3 WHERE id = $1",
                        u,
                        rnd.choice(BUS)[0],
                        rnd.choice([None, *[x for x in USERS if x != u]]),
                    )
                await h.user_changed(u)
            elif kind == "role":
                u = rnd.choice(USERS)
                async with h.pool.acquire() as c:
                    await c.execute("DELETE FROM admin.user_roles WHERE user_id = $1", u)
                    await c.execute("INSERT INTO admin.user_roles VALUES ($1, $2)", u, rnd.choice(["r1", "r2", "r3"]))
                await h.user_changed(u)
            else:
                version += 1
                await h.publish("P", version, profile(rnd), rnd.sample(USERS, 4))
            await h.caught_up()
            try:
                await h.assert_matches_reference()
                sizes.append(sum(len(v) for v in (await h.user_sets()).values()))
            except AssertionError:
                print("step", step, kind, orjson.dumps(h.log[-1][2].model_dump(mode="json")).decode())
                raise

        assert min(sizes) > 0 and len(set(sizes)) > 5, sizes  # the sequence really moved the sets
        before = await h.max_op_id()
        await h.redeliver_all(reverse=True)
        await h.caught_up()
        assert await h.max_op_id() == before
        await h.assert_matches_reference()
