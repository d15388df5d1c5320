"""The publish worker's wiring: which events it handles (all of a poll in one transaction, the
consumer loop's fallback parks a poison one) and which failures are waited out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from offsync_shared import bus, db, metrics, outbox, records_hint
from offsync_shared.doorbell import Doorbell
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.admin import (
    RETIRED_TYPES,
    BusinessUnitChanged,
    EntityChanged,
    ProfileDeleted,
    ProfilePublished,
    RoleChanged,
    TeamChanged,
    UserChanged,
)
from offsync_shared.events.records import RecordChanged, RecordsChanged, changes_of
from offsync_shared.topics import ADMIN, DEAD_LETTER, RECORDS, SYNC_NOTIFY
from publish_service import bucket_writes, first_copy, membership
from publish_service.records import RecordApplier, latency_ms

log = logging.getLogger(__name__)

HINTED_PER_TRANSACTION = 500  # records of hints applied in one transaction (a hint names <= ~150)
HINT_VERSIONS_KEPT = 100_000  # hinted versions remembered for their events (one entry per record)

GROUP = "publish-service"
# Org events that can change which buckets a user selects; all are handled by one reconcile.
ORG_EVENTS = {UserChanged.TYPE, TeamChanged.TYPE, BusinessUnitChanged.TYPE, RoleChanged.TYPE, EntityChanged.TYPE}
PROFILE_EVENTS = {ProfilePublished.TYPE, ProfileDeleted.TYPE}
RECORD_EVENTS = {RecordsChanged.TYPE, RecordChanged.TYPE}  # the second from producers of earlier versions
# Records applied in one transaction: a poll of RecordsChanged can carry 500 x 500 records, and
# the ops lock is held for a transaction's length (state-based, so a retried poll redoes nothing).
RECORDS_PER_TRANSACTION = 2000
_COMMIT_TO_OP = metrics.LATENCY.labels("record_commit_to_op")
# Failures that say nothing about the event: retried with backoff instead of dead-lettering.
TRANSIENT: tuple[type[BaseException], ...] = (
    *db.DATABASE_AWAY,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.UndefinedTableError,  # admin/data schema not migrated yet by its owner
)


async def wait_out_database(attempt: Callable[[], Awaitable[None]], what: str) -> None:
    await db.while_away(attempt, TRANSIENT, what=what)


class PublishWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: bus.Producer,
        bootstrap: str,
        prefix: str,
        max_records: int = 500,
        relay: outbox.OutboxRelay | None = None,
        bell: Doorbell | None = None,
        **tuning: Any,  # ConsumerConfig timeouts (CommonSettings.consumer_tuning)
    ) -> None:
        self.pool = pool
        self.relay = relay
        self.notify_topic = SYNC_NOTIFY.full(prefix)
        # Ops hints only where gateways hear them: on the doorbell's connection (sync_service.app).
        self.hint = bell is not None
        self.applier = RecordApplier(self.notify_topic, hint=self.hint)
        # Records hints heard and not applied yet, and the task applying them (_apply_hinted).
        self._hinted: dict[tuple[str, str], None] = {}
        self._hint_task: asyncio.Task[None] | None = None
        self.hints_applied = 0
        # The version each hinted record's buckets were brought to (committed): its event, when
        # it comes at that version or an older one, has nothing left to do and is skipped.
        self._hint_versions: dict[tuple[str, str], int] = {}
        self.events_skipped = 0
        # The records the hint transaction under way applies, and its end: their events wait for
        # it instead of racing it with a transaction of their own (_after_hints_in_flight).
        self._in_flight: tuple[frozenset[tuple[str, str]], asyncio.Future[None]] | None = None
        self.events_waited = 0
        if bell is not None:
            bell.listen(records_hint.CHANNEL, self.on_records_hint)
        # Recent record commit -> ops committed latencies (ms), for /metrics-independent reporting.
        self.latencies_ms: deque[float] = deque(maxlen=100_000)
        self.batch_ms: deque[float] = deque(maxlen=100_000)
        self.loop = bus.ConsumerLoop(
            bus.ConsumerConfig(
                bootstrap,
                [ADMIN.full(prefix), RECORDS.full(prefix)],
                GROUP,
                DEAD_LETTER.full(prefix),
                max_records=max_records,
                **tuning,
            ),
            producer,
            name="publish-service",
            bell=bell,
            # Every type in one set: a poll's record changes and org events share a transaction.
            set_handlers={t: self.apply for t in (*RECORD_EVENTS, *ORG_EVENTS, *PROFILE_EVENTS)},
            retry=wait_out_database,
            ignore=RETIRED_TYPES,
        )

    async def run(self) -> None:
        await self.loop.start()
        try:
            await self.loop.run()
        finally:
            if self._hint_task is not None:
                self._hint_task.cancel()
            await self.loop.stop()

    def on_records_hint(self, payload: str) -> None:
        """Records committed a moment ago (offsync_shared.records_hint): their buckets are brought
        up to date now, by one task, hints heard meanwhile in its next transaction."""
        keys = records_hint.decode(payload)
        if not keys:
            return
        self._hinted.update(dict.fromkeys(keys))
        if self._hint_task is None or self._hint_task.done():
            self._hint_task = asyncio.get_running_loop().create_task(self._apply_hinted(), name="records-hints")

    async def _apply_hinted(self) -> None:
        while self._hinted:
            keys = list(self._hinted)[:HINTED_PER_TRANSACTION]
            for k in keys:
                del self._hinted[k]
            done = asyncio.get_running_loop().create_future()
            self._in_flight = (frozenset(keys), done)
            try:
                async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay):
                    async with bucket_writes.ops_transaction(conn):
                        result = await self.applier.apply_keys(conn, keys, locked=True)
                self.hints_applied += len(keys)
                versions = self._hint_versions
                versions.update(result.versions or {})
                while len(versions) > HINT_VERSIONS_KEPT:  # events that never came: forget the oldest
                    del versions[next(iter(versions))]
            except Exception as exc:  # noqa: BLE001 - a hint is an early start only: the events follow
                log.info("records hint not applied; their events will be", extra={"error": repr(exc)})
                self._hinted.clear()
                return
            finally:  # the versions are known (or the hint failed): waiting events go on
                self._in_flight = None
                done.set_result(None)

    async def _after_hints_in_flight(self, records: list[RecordChanged]) -> None:
        """Events usually arrive while their hint's transaction is still under way (the broker
        hop is slower than the NOTIFY). Applied at once, each would run a second transaction that
        queues for the ops lock and then writes nothing, on the cores the change's delivery needs;
        waiting for the hint's commit lets ``_not_hinted`` skip it."""
        if self._in_flight is None:
            return
        keys, done = self._in_flight
        if any((e.entity, e.id) in keys for e in records):
            self.events_waited += 1
            await asyncio.shield(done)

    def _not_hinted(self, records: list[RecordChanged]) -> list[RecordChanged]:
        """The events a records hint has not already applied (state-based: the buckets of a
        record are at its hinted version, so its event at that version or older writes no op)."""
        versions = self._hint_versions
        kept = []
        for e in records:
            k = (e.entity, e.id)
            v = versions.get(k)
            if v is None or e.version > v:
                kept.append(e)
                continue
            self.events_skipped += 1
            if e.version == v:
                del versions[k]
        return kept

    async def apply(self, batch: Sequence[tuple[Event, Envelope]]) -> None:
        records = changes_of(e for e, _ in batch)
        if records:
            await self._after_hints_in_flight(records)
        if self._hint_versions:
            records = self._not_hinted(records)
        admin = [(e, env) for e, env in batch if env.type in ORG_EVENTS | PROFILE_EVENTS]
        if not records and not admin:
            return
        started = time.perf_counter()
        profiles = [e for e, _ in admin if isinstance(e, ProfilePublished)]
        published = {it.entity for e in profiles for it in e.items}
        if published:
            links = {name: ddl for e in profiles for name, ddl in membership.link_indexes_of(e).items()}
            await first_copy.premirror(self.pool, published, indexes=links)
        # The notifications go to the gateways straight after the commit (the relay is the backstop).
        rest = records
        if admin:
            async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay):
                async with conn.transaction():
                    for e, _ in admin:
                        if isinstance(e, (ProfilePublished, ProfileDeleted)):
                            await membership.apply_profile_event(conn, e)
                    with metrics.LATENCY.labels("publish_reconcile").time():
                        await membership.reconcile(conn, self.notify_topic, self.pool, hint=self.hint)
                    if records:
                        await self.applier.apply(conn, records[:RECORDS_PER_TRANSACTION])
            async with self.pool.acquire() as conn:
                await self.applier.load_registry(conn)
            rest = records[RECORDS_PER_TRANSACTION:]
        for i in range(0, len(rest), RECORDS_PER_TRANSACTION):
            async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay):
                async with bucket_writes.ops_transaction(conn):
                    await self.applier.apply(conn, rest[i : i + RECORDS_PER_TRANSACTION], locked=True)
        self._observe(records, started)

    def _observe(self, records: list[RecordChanged], started: float) -> None:
        self.batch_ms.append((time.perf_counter() - started) * 1000)
        stage = _COMMIT_TO_OP  # the labelled child looked up once: labels() costs as much as observe()
        for ms in latency_ms(records):
            stage.observe(ms / 1000)
            self.latencies_ms.append(ms)
