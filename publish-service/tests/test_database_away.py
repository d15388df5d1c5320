"""A database shutdown ends the sessions it finds busy: the worker's query fails with a
connection error or, when the server's notice is read first, AdminShutdownError. The worker
must wait either out like any outage, at the batch step and the event-by-event step alike; a
record change parked in the dead letters is lost to every device."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg
import pytest
from publish_harness import harness
from test_publish_flow import ACCOUNTS, ITEMS_V1, seed_org

from offsync_shared import db, metrics
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.records import RecordChanged
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration

OPS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('sync:ops'))"  # what every op writer takes


def _dead_letters() -> float:
    return metrics.DEAD_LETTERS.labels("publish-service")._value.get()


async def _terminate_the_waiter(admin: asyncpg.Connection) -> None:
    """Wait for the worker to block on the ops lock, then end its session as a shutdown would."""

    async def terminated() -> bool:
        return bool(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
            )
        )

    await eventually(terminated, timeout=30, interval=0.02, message="worker blocked on the ops lock")


async def test_terminated_sessions_are_waited_out_not_dead_lettered(fresh_env: InfraEnv) -> None:
    async with harness(fresh_env) as h:
        async with h.pool.acquire() as c:
            await seed_org(c)
        await h.publish("P", 1, ITEMS_V1, ["u1", "u2", "u3"])
        await h.caught_up()
        dead_before = _dead_letters()
        admin = await asyncpg.connect(fresh_env.pg_dsn)
        holder = await asyncpg.connect(fresh_env.pg_dsn)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(OPS_LOCK)  # the worker's transaction will wait here
            rid, owner, bu = ACCOUNTS[0]
            ev = await h.put_record("account", rid, owner=owner, bu=bu, attrs={"name": "during the shutdown"})
            for _ in range(3):  # the batch step, then whatever the worker does next: each one cut
                await _terminate_the_waiter(admin)
            await tx.rollback()
            await h.caught_up()
        finally:
            await holder.close()
            await admin.close()
        assert _dead_letters() == dead_before
        async with h.pool.acquire() as c:
            versions = {
                r["version"]
                for r in await c.fetch(
                    "SELECT version FROM sync.bucket_ops WHERE entity = 'account' AND record_id = $1", rid
                )
            }
        assert versions == {ev.version}
        await h.assert_matches_reference()


async def test_an_outage_in_the_event_by_event_fallback_is_waited_out(
    fresh_env: InfraEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poison event sends the batch down the event-by-event path; the database going away
    there must not park the good event with the poison one."""
    monkeypatch.setattr(db, "RETRY_FIRST_S", 0.0)
    async with harness(fresh_env) as h:
        async with h.pool.acquire() as c:
            await seed_org(c)
        await h.publish("P", 1, ITEMS_V1, ["u1", "u2", "u3"])
        await h.caught_up()
        rid, owner, bu = ACCOUNTS[1]
        async with h.pool.acquire() as c:  # the record as conflict-service commits it; its event is handed over below
            version = await c.fetchval(
                """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
                   VALUES ('account', $1, 1, $2, $3, $4, '{}') RETURNING version""",
                rid,
                owner[1],
                owner[0],
                bu,
            )
        good = RecordChanged(
            entity="account",
            id=rid,
            version=version,
            deleted=False,
            owner_id=owner[1],
            owner_type=owner[0],
            business_unit_id=bu,
            attributes={},
            committed_at=time.time(),
        )
        poison = RecordChanged(
            entity="account",
            id="poison",
            version=1,
            deleted=False,
            owner_id="u1",
            owner_type="user",
            business_unit_id="b1",
            attributes={},
            committed_at=time.time(),
        )
        batch = [(poison, poison.envelope("account:poison")), (good, good.envelope(f"account:{rid}"))]
        real_apply, away_once = (
            h.worker.apply,
            [asyncpg.AdminShutdownError("terminating connection due to administrator command")],
        )

        async def apply(items: Sequence[tuple[Event, Envelope]]) -> None:
            if any(e is poison for e, _ in items):
                raise ValueError("a change this worker can never apply")
            if away_once:
                raise away_once.pop()  # the database shuts down just as the good event is retried alone
            await real_apply(items)

        loop = h.worker.loop
        loop.set_handlers = {t: apply for t in loop.set_handlers}  # the same table, the faulty apply
        dead_before = _dead_letters()
        await loop.handle_decoded(batch)
        assert _dead_letters() == dead_before + 1  # the poison one only
        async with h.pool.acquire() as c:
            assert (
                await c.fetchval(
                    "SELECT count(*) FROM sync.bucket_ops WHERE entity = 'account' AND record_id = $1", rid
                )
                > 0
            )
