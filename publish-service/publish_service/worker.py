"""The publish worker's wiring: which events it handles (all of a poll in one transaction, the
consumer loop's fallback parks a poison one) and which failures are waited out."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from offsync_shared import bus, db, metrics, outbox
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
from offsync_shared.events.records import RecordChanged
from offsync_shared.topics import ADMIN, DEAD_LETTER, RECORDS, SYNC_NOTIFY
from publish_service import bucket_writes, membership
from publish_service.records import RecordApplier, latency_ms

log = logging.getLogger(__name__)

GROUP = "publish-service"
# Org events that can change which buckets a user selects; all are handled by one reconcile.
ORG_EVENTS = {UserChanged.TYPE, TeamChanged.TYPE, BusinessUnitChanged.TYPE, RoleChanged.TYPE, EntityChanged.TYPE}
PROFILE_EVENTS = {ProfilePublished.TYPE, ProfileDeleted.TYPE}
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
            set_handlers={t: self.apply for t in (RecordChanged.TYPE, *ORG_EVENTS, *PROFILE_EVENTS)},
            retry=wait_out_database,
            ignore=RETIRED_TYPES,
        )

    async def run(self) -> None:
        await self.loop.start()
        try:
            await self.loop.run()
        finally:
            await self.loop.stop()

    async def apply(self, batch: Sequence[tuple[Event, Envelope]]) -> None:
        records = [e for e, _ in batch if isinstance(e, RecordChanged)]
        admin = [(e, env) for e, env in batch if env.type in ORG_EVENTS | PROFILE_EVENTS]
        started = time.perf_counter()
        published = {it.entity for e, _ in admin if isinstance(e, ProfilePublished) for it in e.items}
        if published:
            await bucket_writes.premirror(self.pool, published)
        # The notifications go to the gateways straight after the commit (the relay is the backstop).
        async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay):
            async with conn.transaction():
                if admin:
                    for e, _ in admin:
                        if isinstance(e, (ProfilePublished, ProfileDeleted)):
                            await membership.apply_profile_event(conn, e)
                    with metrics.LATENCY.labels("publish_reconcile").time():
                        await membership.reconcile(conn, self.notify_topic, self.pool, hint=self.hint)
                if records:
                    await self.applier.apply(conn, records)
        self.batch_ms.append((time.perf_counter() - started) * 1000)
        for ms in latency_ms(records):
            metrics.LATENCY.labels("record_commit_to_op").observe(ms / 1000)
            self.latencies_ms.append(ms)
