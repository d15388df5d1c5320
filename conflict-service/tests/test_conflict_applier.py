"""The batch applier over a real PostgreSQL: per-change results, versions, tombstones, the
conflicts log, the sync error ledger, batch dedupe and the events written to the outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from conflict_org import ALICE, BOB, CAROL, DAVE, Org, batch, change, lock_waits, migrated_pool, seed

from conflict_service.applier import BatchApplier, Topics
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration

TOPICS = Topics(records="t.offsync.records.v1", batch_results="t.offsync.batch-results.v1")


@pytest_asyncio.fixture
async def org(fresh_env: InfraEnv) -> AsyncIterator[Org]:
    pool = await migrated_pool(fresh_env.pg_dsn)
    try:
        yield await seed(pool)
    finally:
        await pool.close()


async def test_creates_updates_deletes_bump_versions_and_emit_events(org: Org) -> None:
    ap = BatchApplier(org.pool, TOPICS)
    [ans] = await ap.apply(
        [
            batch(
                ALICE,
                "d1",
                change(0, "create", "account", "a1", name="Acme"),
                change(1, "update", "account", "a1", 1, city="Oslo"),
                change(2, "create", "contact", "c1", lastname="Li", account="a1"),
                change(3, "delete", "contact", "c1", 1),
            )
        ]
    )
    assert [(r.status, r.version) for r in ans.results] == [
        ("applied", 1),
        ("applied", 2),
        ("applied", 1),
        ("applied", 2),
    ]
    a1 = await org.record("account", "a1")
    assert a1 is not None and (a1["version"], a1["attributes"], a1["owner_id"], a1["business_unit_id"]) == (
        2,
        {"name": "Acme", "city": "Oslo"},
        ALICE,
        "sales",
    )
    c1 = await org.record("contact", "c1")
    assert c1 is not None and c1["deleted"] and c1["version"] == 2  # a tombstone
    [event] = await org.outbox("records.v1")  # one transaction's records: one event
    assert (event["type"], event["key"]) == ("records.changed", "account:a1")
    changes = event["payload"]["records"]
    assert [(c["entity"], c["id"], c["version"], c["deleted"]) for c in changes] == [
        ("account", "a1", 1, False),
        ("account", "a1", 2, False),
        ("contact", "c1", 1, False),
        ("contact", "c1", 2, True),
    ]
    assert changes[1]["attributes"] == {"name": "Acme", "city": "Oslo"}
    assert changes[0]["source"] == {"device_id": "d1", "batch_id": ans.batch_id}
    assert changes[0]["committed_at"] > 0
    [res] = await org.outbox("batch-results.v1")
    assert res["key"] == "d1" and res["payload"]["batch_id"] == ans.batch_id


async def test_bad_change_is_rejected_alone_and_ledgered(org: Org) -> None:
    ap = BatchApplier(org.pool, TOPICS)
    [ans] = await ap.apply(
        [
            batch(
                ALICE,
                "d1",
                change(0, "create", "account", "a1", name="Acme"),
                change(1, "create", "contact", "c1", phone="1"),  # lastname required
                change(2, "create", "contact", "c2", lastname="X", account="nope"),  # lookup to nothing
                change(3, "update", "account", "ghost", 1, city="x"),
                change(4, "create", "unknown_entity", "u1"),
                change(5, "update", "account", "a1", 1, city="Oslo"),
            )
        ]
    )
    assert [(r.status, r.code) for r in ans.results] == [
        ("applied", None),
        ("rejected", "validation"),
        ("rejected", "validation"),
        ("rejected", "not_found"),
        ("rejected", "validation"),
        ("applied", None),
    ]
    ledger = await org.pool.fetch(
        "SELECT seq, code, field, user_id, device_id, change FROM data.sync_errors ORDER BY seq"
    )
    assert [(r["seq"], r["code"], r["field"]) for r in ledger] == [
        (1, "validation", "lastname"),
        (2, "validation", "account"),
        (3, "not_found", None),
        (4, "validation", "entity"),
    ]
    assert ledger[0]["change"]["fields"] == {"phone": "1"} and ledger[0]["device_id"] == "d1"


async def test_permissions_and_no_leak(org: Org) -> None:
    ap = BatchApplier(org.pool, TOPICS)
    await ap.apply([batch(ALICE, "d1", change(0, "create", "account", "a1", name="Alice's"))])
    [ans] = await ap.apply(
        [
            batch(
                BOB,
                "d2",
                change(0, "update", "account", "a1", 1, city="x"),  # Bob (user depth) cannot read Alice's record
                change(1, "create", "account", "a1", name="mine"),
                change(2, "update", "account", "ghost", 1, city="x"),
            )
        ]
    )
    assert [(r.status, r.code, r.record, r.version) for r in ans.results] == [
        ("rejected", "not_found", None, None),
        ("rejected", "forbidden", None, None),
        ("rejected", "not_found", None, None),
    ]
    # Carol (business-unit depth in east) cannot reach sales; Dave is disabled.
    [c] = await ap.apply([batch(CAROL, "d3", change(0, "update", "account", "a1", 1, city="x"))])
    [d] = await ap.apply([batch(DAVE, "d4", change(0, "create", "account", "a9", name="x"))])
    assert (c.results[0].code, d.results[0].code) == ("not_found", "forbidden")
    a1 = await org.record("account", "a1")
    assert a1 is not None and a1["version"] == 1


@pytest.mark.parametrize(
    "detection,status,city,version",
    [(False, "conflict", "device", 3), (True, "conflict", "server", 2)],
    ids=["client-wins", "server-wins"],
)
async def test_update_update_conflict_follows_org_policy(
    org: Org, detection: bool, status: str, city: str, version: int
) -> None:
    await org.set_policy(detection)
    ap = BatchApplier(org.pool, TOPICS)
    await ap.apply([batch(ALICE, "d1", change(0, "create", "account", "a1", name="A"))])
    await ap.apply([batch(ALICE, "d2", change(0, "update", "account", "a1", 1, city="server"))])
    [ans] = await ap.apply([batch(ALICE, "d1", change(0, "update", "account", "a1", 1, city="device"))])
    r = ans.results[0]
    assert (r.status, r.version, r.record["attributes"]["city"]) == (status, version, city)  # type: ignore[index]
    log = await org.pool.fetchrow("SELECT * FROM data.conflicts")
    assert log["policy"] == ("server_wins" if detection else "client_wins")
    assert log["server_record"]["attributes"]["city"] == "server" and log["client_change"]["fields"] == {
        "city": "device"
    }
    assert log["result_record"]["attributes"]["city"] == city
    ledgered = await org.pool.fetchval("SELECT count(*) FROM data.sync_errors WHERE code = 'server_wins'")
    assert ledgered == (1 if detection else 0)


async def test_field_merge_override(org: Org) -> None:
    await org.set_policy(True, contact_override="field_merge")
    ap = BatchApplier(org.pool, TOPICS)
    await ap.apply([batch(ALICE, "d1", change(0, "create", "contact", "c1", lastname="Li", phone="1", email="a@x"))])
    await ap.apply([batch(ALICE, "d2", change(0, "update", "contact", "c1", 1, phone="2"))])
    [ans] = await ap.apply([batch(ALICE, "d1", change(0, "update", "contact", "c1", 1, phone="3", email="b@x"))])
    r = ans.results[0]
    assert (r.status, r.code) == ("conflict", "merged")
    assert r.record is not None and r.record["attributes"] == {"lastname": "Li", "phone": "2", "email": "b@x"}
    row = await org.pool.fetchrow("SELECT lost_fields, policy FROM data.conflicts")
    assert (row["lost_fields"], row["policy"]) == (["phone"], "field_merge")


async def test_batch_seen_before_is_answered_from_store(org: Org) -> None:
    """Failure mode 2: the answer was lost and the device re-sends the batch."""
    ap = BatchApplier(org.pool, TOPICS)
    b = batch(
        ALICE, "d1", change(0, "create", "account", "a1", name="A"), change(1, "update", "account", "a1", 1, city="x")
    )
    [first] = await ap.apply([b])
    [again, also] = await ap.apply([b, b])
    assert first.results == again.results == also.results
    a1 = await org.record("account", "a1")
    assert a1 is not None and a1["version"] == 2
    assert len(await org.record_changes()) == 2 and len(await org.outbox("batch-results.v1")) == 3
    # Same creates re-sent under a new batch id (device lost its batch id) are no-ops too.
    [retry] = await ap.apply([batch(ALICE, "d1", change(0, "create", "account", "a2", name="B"))])
    [retry2] = await ap.apply([batch(ALICE, "d1", change(0, "create", "account", "a2", name="B"))])
    assert (retry.results[0].version, retry2.results[0].code, retry2.results[0].version) == (1, "duplicate", 1)


async def test_a_create_racing_another_of_the_same_id_is_decided_against_it_not_written_over_it(org: Org) -> None:
    """Neither transaction sees the other's new row when it locks the records it touches; the
    second's insert waits for the first's commit and then fails (unique violation), so the
    first's version 1 is never overwritten by another version 1. The applier runs the second
    again: its create meets the first's record as a conflict (client wins: version 2)."""
    ap = BatchApplier(org.pool, TOPICS)
    async with org.pool.acquire() as conn:
        async with conn.transaction():
            await ap.apply_in(conn, [batch(ALICE, "d1", change(0, "create", "account", "same", name="First"))])
            racing = asyncio.create_task(
                ap.apply([batch(ALICE, "d2", change(0, "create", "account", "same", name="Second"))])
            )
            await eventually(lambda: lock_waits(org.pool), message="the second insert waiting for the first")
    [ans] = await racing
    assert [(r.status, r.version) for r in ans.results] == [("conflict", 2)]
    row = await org.record("account", "same")
    assert row is not None and (row["version"], row["attributes"]) == (2, {"name": "Second"})
    changes = await org.record_changes()
    assert [(c["version"], c["attributes"]) for c in changes] == [
        (1, {"name": "First"}),
        (2, {"name": "Second"}),
    ]
    [conflict] = await org.pool.fetch("SELECT outcome, server_version FROM data.conflicts WHERE record_id = 'same'")
    assert (conflict["outcome"], conflict["server_version"]) == ("client_wins", 1)
