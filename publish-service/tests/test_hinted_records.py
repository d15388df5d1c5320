"""The records hint (offsync_shared.records_hint) over a real PostgreSQL and broker: a worker with
a doorbell brings a record's buckets up to date from the hint alone, before (here: without) its
event; the event that follows is skipped, and the store still equals the reference."""

from __future__ import annotations

import time

import pytest
from publish_harness import Harness, harness
from test_publish_flow import ITEMS_V1, seed_org

from offsync_shared import records_hint
from offsync_shared.events.records import RecordChanged
from offsync_shared.topics import RECORDS
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration


async def _write_hinted(h: Harness, rid: str, owner: str, bu: str, name: str) -> RecordChanged:
    """The record as conflict-service writes it with hints on: the row and the hint in one
    transaction; the event is returned, not sent."""
    async with h.pool.acquire() as c, c.transaction():
        row = await c.fetchrow(
            """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
               VALUES ('account', $1, 1, $2, 'user', $3, $4)
               ON CONFLICT (entity, id) DO UPDATE SET version = data.records.version + 1, attributes = $4
               RETURNING version""",
            rid,
            owner,
            bu,
            {"name": name},
        )
        await records_hint.send(c, [("account", rid)])
    return RecordChanged(
        entity="account",
        id=rid,
        version=row["version"],
        owner_id=owner,
        owner_type="user",
        business_unit_id=bu,
        attributes={"name": name},
        committed_at=time.time(),
    )


async def _published(h: Harness) -> None:
    """The test org, profile P published to u1-u3, and the worker caught up."""
    async with h.pool.acquire() as c:
        await seed_org(c)
    await h.publish("P", 1, ITEMS_V1, ["u1", "u2", "u3"])
    await h.caught_up()


async def _op_version(h: Harness, rid: str) -> int | None:
    return await h.pool.fetchval("SELECT max(version) FROM sync.bucket_ops WHERE record_id = $1 AND op = 'put'", rid)


async def test_a_hinted_record_reaches_its_buckets_before_its_event(fresh_env: InfraEnv) -> None:
    async with harness(fresh_env, bell=True) as h:
        await _published(h)

        first = await _write_hinted(h, "hinted-1", "u1", "b1", "v1")
        assert await eventually(lambda: _op_version(h, "hinted-1"), message="ops written from the hint alone") == 1
        assert h.worker.hints_applied >= 1
        second = await _write_hinted(h, "hinted-1", "u1", "b1", "v2")
        await eventually(lambda: _is(h, "hinted-1", 2), message="the second version from its hint")

        # The events come after all (in order): each has nothing left to do and is skipped.
        topic = RECORDS.full(fresh_env.topic_prefix)
        for ev in (first, second):
            await h.send(topic, "account:hinted-1", ev)
        await h.caught_up()
        assert h.worker.events_skipped == 2
        await h.assert_matches_reference()

        # A hint for a record that is not in data.records: left to its event, nothing indexed.
        async with h.pool.acquire() as c, c.transaction():
            await records_hint.send(c, [("account", "not-written")])
        await h.put_record("account", "after", owner=("user", "u2"), bu="b2", attrs={"name": "x"})
        await h.caught_up()
        assert await h.pool.fetchval("SELECT count(*) FROM sync.record_index WHERE record_id = 'not-written'") == 0
        await h.assert_matches_reference()


async def _is(h: Harness, rid: str, version: int) -> bool:
    return await _op_version(h, rid) == version


async def test_an_event_that_comes_while_its_hint_is_applied_waits_for_it_and_is_skipped(fresh_env: InfraEnv) -> None:
    """The event usually arrives while its hint's transaction is still under way; it waits for
    that commit and is skipped, instead of a second transaction for the same record."""
    async with harness(fresh_env, bell=True) as h:
        await _published(h)

        async with h.pool.acquire() as blocker, blocker.transaction():
            # The ops lock held elsewhere: the hint's transaction stays under way until it is let go.
            await blocker.execute("SELECT pg_advisory_xact_lock(hashtext('sync:ops'))")
            event = await _write_hinted(h, "raced-1", "u1", "b1", "v1")
            await eventually(lambda: _lock_waiters(h, 1), message="the hint's transaction waits for the ops lock")
            await h.send(RECORDS.full(fresh_env.topic_prefix), "account:raced-1", event)
            await eventually(lambda: _event_waited(h), message="the event waits for the hint in flight")
            assert await _lock_waiters(h, 1), "the event started no transaction of its own"
        await h.caught_up()
        assert h.worker.events_skipped == 1
        assert await _op_version(h, "raced-1") == 1
        await h.assert_matches_reference()


async def _lock_waiters(h: Harness, n: int) -> bool:
    return await h.pool.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == n


async def _event_waited(h: Harness) -> bool:
    return h.worker.events_waited == 1


async def test_the_publishing_worker_has_its_new_registry_before_any_change(fresh_env: InfraEnv) -> None:
    """Loading the bucket definitions is the publish's work, not the next change's."""
    async with harness(fresh_env, bell=True) as h:
        await _published(h)
        generation = await h.pool.fetchval("SELECT generation FROM sync.registry_generation")
        assert generation > 0
        assert h.worker.applier.registry.generation == generation
