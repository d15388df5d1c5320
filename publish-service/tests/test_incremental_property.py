"""The correctness proof of incremental maintenance: hypothesis generates an org, a profile,
records and a sequence of record and org changes; the real SQL of publish (reconcile) and of
the record applier runs on PostgreSQL after each change, and every user's set in the bucket
store must equal the naive reference, with consistent checksums and versions.

The broker is left out here (the integration flow tests cover it) so that hypothesis can run
many examples quickly; the database work is exactly the service's."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from publish_harness import create_schemas
from publish_orgs import BUS, OWNERSHIP, TEAMS, USERS, orgs, profiles, record_for, records

from offsync_shared import db
from offsync_shared.checksum import op_hash
from offsync_shared.events.admin import ProfileItemSnapshot, ProfilePublished
from offsync_shared.events.records import RecordChanged
from offsync_stack.infra import Infra
from publish_service import first_copy, membership
from publish_service.records import RecordApplier
from publish_service.rules import reference
from publish_service.rules.buckets import ProfileItem
from publish_service.rules.model import OrgModel, Record

pytestmark = pytest.mark.integration

Run = Callable[[Coroutine[Any, Any, Any]], Any]
IDS = {e: [f"{e[0]}{i}" for i in range(4)] for e in OWNERSHIP}
TABLES = (
    "admin.team_roles, admin.user_roles, admin.team_members, admin.teams, admin.users, admin.roles, "
    "admin.business_units, admin.entities, data.records, sync.bucket_ops, sync.buckets, sync.user_buckets, "
    "sync.user_profiles, sync.record_index, sync.published_profiles, sync.profile_members, sync.mirrored_entities, sync.outbox"
)


@pytest.fixture(scope="module")
def database(infra: Infra) -> Iterator[tuple[Run, asyncpg.Pool]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(120)

    dsn = run(infra.create_database("prop"))
    pool = run(db.create_pool(dsn, max_size=2))
    run(create_schemas(pool))
    try:
        yield run, pool
    finally:
        run(pool.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@st.composite
def changes(draw: Any) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["record", "record", "record", "member", "user", "role"]))
    if kind == "record":
        entity = draw(st.sampled_from(list(OWNERSHIP)))
        return ("record", record_for(draw, entity, draw(st.sampled_from(IDS[entity])), IDS, 0))
    if kind == "member":
        return ("member", draw(st.sampled_from(TEAMS)), draw(st.sampled_from(USERS)))
    if kind == "user":
        return (
            "user",
            draw(st.sampled_from(USERS)),
            draw(st.sampled_from(list(BUS))),
            draw(st.sampled_from([None, *USERS])),
        )
    return ("role", draw(st.sampled_from(USERS)), draw(st.sampled_from(["r1", "r2", "r3"])))


async def load_state(conn: asyncpg.Connection, org: OrgModel) -> None:
    await conn.execute(f"TRUNCATE {TABLES} CASCADE")
    await conn.execute("UPDATE sync.registry_generation SET generation = 0")
    for b in sorted(BUS, key=lambda b: b != "root" and (BUS[b] != "root") + 1):
        await conn.execute("INSERT INTO admin.business_units(id, name, parent_id) VALUES ($1, $1, $2)", b, BUS[b])
    for r in org.roles.values():
        await conn.execute(
            "INSERT INTO admin.roles(id, name, read_offline_profile, privileges) VALUES ($1, $1, $2, $3)",
            r.id,
            r.read_offline_profile,
            {k: dict(v) for k, v in r.privileges.items()},
        )
    for u in org.users.values():
        await conn.execute(
            "INSERT INTO admin.users(id, name, business_unit_id, language, enabled) VALUES ($1, $1, $2, $3, $4)",
            u.id,
            u.business_unit_id,
            u.language,
            u.enabled,
        )
    for u in org.users.values():
        await conn.execute("UPDATE admin.users SET manager_id = $2 WHERE id = $1", u.id, u.manager_id)
        for role_id in u.role_ids:
            await conn.execute("INSERT INTO admin.user_roles VALUES ($1, $2)", u.id, role_id)
    for t in org.teams.values():
        await conn.execute(
            "INSERT INTO admin.teams(id, name, business_unit_id) VALUES ($1, $1, $2)", t.id, t.business_unit_id
        )
        for m in t.member_ids:
            await conn.execute("INSERT INTO admin.team_members VALUES ($1, $2)", t.id, m)
        for role_id in t.role_ids:
            await conn.execute("INSERT INTO admin.team_roles VALUES ($1, $2)", t.id, role_id)
    for e, own in OWNERSHIP.items():
        await conn.execute(
            "INSERT INTO admin.entities(logical_name, display_name, ownership) VALUES ($1, $1, $2)", e, own
        )


async def write_record(conn: asyncpg.Connection, r: Record) -> RecordChanged:
    row = await conn.fetchrow(
        """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes, deleted)
           VALUES ($1, $2, 1, $3, $4, $5, $6, $7)
           ON CONFLICT (entity, id) DO UPDATE SET version = data.records.version + 1, owner_id = $3, owner_type = $4,
               business_unit_id = $5, attributes = $6, deleted = $7 RETURNING version""",
        r.entity,
        r.id,
        r.owner_id,
        r.owner_type,
        r.business_unit_id,
        dict(r.attributes),
        r.deleted,
    )
    return RecordChanged(
        entity=r.entity,
        id=r.id,
        version=row["version"],
        deleted=r.deleted,
        owner_id=r.owner_id,
        owner_type=r.owner_type,
        business_unit_id=r.business_unit_id,
        attributes=dict(r.attributes),
        committed_at=time.time(),
    )


async def check(conn: asyncpg.Connection, items: list[ProfileItem], members: list[str]) -> None:
    org = await membership.load_org(conn)
    recs = [
        Record(
            r["entity"],
            r["id"],
            r["version"],
            r["owner_id"],
            r["owner_type"],
            r["business_unit_id"],
            r["attributes"],
            r["deleted"],
        )
        for r in await conn.fetch("SELECT * FROM data.records")
    ]
    want = {u: s for u in members if (s := reference.user_set(org, items, u, recs))}
    got: dict[str, set[tuple[str, str]]] = {}
    for r in await conn.fetch("""SELECT DISTINCT ub.user_id, o.entity, o.record_id FROM sync.user_buckets ub
                                 JOIN sync.bucket_ops o ON o.bucket_id = ub.bucket_id AND o.op = 'put'"""):
        got.setdefault(r["user_id"], set()).add((r["entity"], r["record_id"]))
    assert got == want
    versions = {(r.entity, r.id): r.version for r in recs}
    sums: dict[str, int] = {}
    for o in await conn.fetch("SELECT * FROM sync.bucket_ops WHERE op = 'put'"):
        assert o["version"] == versions[(o["entity"], o["record_id"])]
        sums[o["bucket_id"]] = (
            sums.get(o["bucket_id"], 0) + op_hash(o["entity"], o["record_id"], o["version"])
        ) % 2**32
    for b in await conn.fetch("SELECT id, checksum FROM sync.buckets"):
        assert b["checksum"] == sums.get(b["id"], 0)


async def scenario(
    pool: asyncpg.Pool,
    org: OrgModel,
    items: list[ProfileItem],
    recs: list[Record],
    steps: list[tuple[Any, ...]],
    helpers: bool = False,
) -> None:
    """``helpers``: as the worker does, mirror before the publish's transaction and fill new
    buckets over helper connections of the pool, with the planner's statistics of the records,
    so that the first copy and the fill rebuild their tables when they are small beside what
    they bring (first_copy, ops_rebuild); otherwise all in the reconcile's transaction."""
    helper_pool = pool if helpers else None
    applier = RecordApplier("n")  # a fresh registry cache: the generation counter restarts per example
    members = USERS[:3]
    async with pool.acquire() as conn:
        await load_state(conn, org)
        for r in recs:
            await write_record(conn, r)
        ev = ProfilePublished(
            profile_id="P",
            version=1,
            user_ids=members,
            items=[
                ProfileItemSnapshot(entity=i.entity, filter=dict(i.filter), relationships=list(i.relationships))
                for i in items
            ],
        )
        if helpers:
            await conn.execute("ANALYZE data.records")
            await first_copy.premirror(pool, {i.entity for i in items}, parts=3)
        async with conn.transaction():
            await membership.apply_profile_event(conn, ev)
            await membership.reconcile(conn, "n", helper_pool)
        await check(conn, items, members)
        for step in steps:
            if step[0] == "record":
                event = await write_record(conn, step[1])
                async with conn.transaction():
                    await applier.apply(conn, [event])
                async with conn.transaction():  # redelivery is a no-op
                    assert (await applier.apply(conn, [event])).ops == 0
            else:
                if step[0] == "member":
                    if (
                        await conn.fetchval(
                            "DELETE FROM admin.team_members WHERE team_id = $1 AND user_id = $2 RETURNING 1",
                            step[1],
                            step[2],
                        )
                        is None
                    ):
                        await conn.execute("INSERT INTO admin.team_members VALUES ($1, $2)", step[1], step[2])
                elif step[0] == "user":
                    await conn.execute(
                        "UPDATE admin.users SET business_unit_id = $2, manager_id = $3 WHERE id = $1",
                        step[1],
                        step[2],
                        step[3] if step[3] != step[1] else None,
                    )
                else:
                    await conn.execute("DELETE FROM admin.user_roles WHERE user_id = $1", step[1])
                    await conn.execute("INSERT INTO admin.user_roles VALUES ($1, $2)", step[1], step[2])
                async with conn.transaction():
                    await membership.reconcile(conn, "n", helper_pool)
            await check(conn, items, members)


@settings(
    max_examples=int(os.environ.get("PUBLISH_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(org=orgs(), items=profiles(), recs=records(), steps=st.lists(changes(), max_size=8), helpers=st.booleans())
def test_incremental_maintenance_equals_reference_after_every_step(
    database: tuple[Run, asyncpg.Pool],
    org: OrgModel,
    items: list[ProfileItem],
    recs: list[Record],
    steps: list[tuple[Any, ...]],
    helpers: bool,
) -> None:
    run, pool = database
    run(scenario(pool, org, items, recs, steps, helpers))
