"""The device-batch consumer: its handler table (event type -> set-wise handler) wired to a
ConsumerLoop in group ``conflict-service``, which failures are waited out, and the answer a batch
gets when it cannot be applied even alone (the loop dead-letters it, so it never blocks its
partition, and the device is told ``unprocessable``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from conflict_service.applier import BatchApplier, topics_for
from offsync_shared import bus, db
from offsync_shared.doorbell import Doorbell
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.outbox import OutboxRelay
from offsync_shared.topics import DEAD_LETTER, DEVICE_BATCHES

log = logging.getLogger(__name__)

# Failures that say nothing about the batches (the database is restarting or away): retried with
# backoff, never answered as "unprocessable" nor dead-lettered. Answering them would lose the
# batch: the device keeps waiting on an open connection, and the refusal cannot even be stored.
TRANSIENT: tuple[type[BaseException], ...] = db.DATABASE_AWAY

GROUP_ID = "conflict-service"


async def wait_out_database(attempt: Callable[[], Awaitable[None]], what: str) -> None:
    await db.while_away(attempt, TRANSIENT, what=what)


class BatchWorker:
    """Applies the device batches of each poll together in one transaction (fast path); if that
    transaction fails, applies them one at a time so one bad batch cannot hold up the others."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: bus.Producer,
        bootstrap: str,
        prefix: str,
        *,
        max_records: int = 500,
        apply_concurrency: int = 2,
        relay: OutboxRelay | None = None,
        bell: Doorbell | None = None,
        **tuning: Any,  # ConsumerConfig timeouts (CommonSettings.consumer_tuning)
    ) -> None:
        self.applier = BatchApplier(pool, topics_for(prefix), relay)
        self.apply_concurrency = max(1, apply_concurrency)
        self.loop = bus.ConsumerLoop(
            bus.ConsumerConfig(
                bootstrap,
                [DEVICE_BATCHES.full(prefix)],
                GROUP_ID,
                DEAD_LETTER.full(prefix),
                max_records=max_records,
                **tuning,
            ),
            producer,
            name="conflict-service",
            bell=bell,
            set_handlers={BatchUploaded.TYPE: self.on_batches_uploaded},
            retry=wait_out_database,
            on_parked=self.refuse,
        )

    async def on_batches_uploaded(self, group: Sequence[tuple[Event, Envelope]]) -> None:
        """A poll's batches in ``apply_concurrency`` transactions at once, each holding every
        batch of its devices in poll order (a device's batches stay in order; devices never
        share a transaction across groups): one transaction's Python work overlaps another's
        wait on PostgreSQL. The next poll starts once all are committed (or failed: the loop
        then applies the poll's batches one at a time; applying a batch again is a no-op)."""
        parts = split_by_device(group, self.apply_concurrency)
        if len(parts) == 1:
            await self.applier.apply(_batches(parts[0]))
            return
        outcomes = await asyncio.gather(*(self.applier.apply(_batches(part)) for part in parts), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def refuse(self, event: Event, env: Envelope, exc: Exception) -> None:
        """A batch the loop parked: answer its device (every change ``unprocessable``) so it
        does not wait for an answer that never comes."""
        assert isinstance(event, BatchUploaded)
        await db.while_away(
            lambda: self.applier.refuse(event, "unprocessable", f"the server could not store this batch: {exc}"),
            TRANSIENT,
            what="refusal",
        )

    async def start(self) -> None:
        await self.loop.start()

    async def run(self) -> None:
        await self.loop.run()

    async def stop(self) -> None:
        await self.loop.stop()


def _batches(group: Sequence[tuple[Event, Envelope]]) -> list[BatchUploaded]:
    return [e for e, _ in group if isinstance(e, BatchUploaded)]


def split_by_device(group: Sequence[tuple[Event, Envelope]], parts: int) -> list[list[tuple[Event, Envelope]]]:
    """At most ``parts`` groups, every device's batches in one group, in their original order;
    devices are dealt out in order of first appearance so the groups come out about even."""
    slot: dict[str, int] = {}
    out: list[list[tuple[Event, Envelope]]] = [[] for _ in range(max(1, parts))]
    for item in group:
        event = item[0]
        key = event.device_id if isinstance(event, BatchUploaded) else ""
        if key not in slot:
            slot[key] = len(slot) % len(out)
        out[slot[key]].append(item)
    return [g for g in out if g]
