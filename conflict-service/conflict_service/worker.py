"""The device-batch consumer: one explicit handler table from event type to a set-wise handler,
wired to a ConsumerLoop in group ``conflict-service``; a batch that cannot be applied even alone
is dead-lettered so it never blocks its partition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from conflict_service.applier import BatchApplier, Topics
from offsync_shared import bus, db
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.outbox import OutboxRelay
from offsync_shared.topics import BATCH_RESULTS, DEAD_LETTER, DEVICE_BATCHES, RECORDS

log = logging.getLogger(__name__)

# Failures that say nothing about the batches (the database is restarting or away): retried with
# backoff, never answered as "unprocessable" nor dead-lettered. Answering them would lose the
# batch: the device keeps waiting on an open connection, and the refusal cannot even be stored.
TRANSIENT: tuple[type[BaseException], ...] = db.DATABASE_AWAY

GROUP_ID = "conflict-service"

SetHandler = Callable[[Sequence[tuple[Event, Envelope]]], Awaitable[None]]


def topics_for(prefix: str) -> Topics:
    return Topics(records=RECORDS.full(prefix), batch_results=BATCH_RESULTS.full(prefix))


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
        **tuning: Any,  # ConsumerConfig timeouts (CommonSettings.consumer_tuning)
    ) -> None:
        self.applier = BatchApplier(pool, topics_for(prefix), relay)
        self.apply_concurrency = max(1, apply_concurrency)
        self.handlers: dict[str, SetHandler] = {BatchUploaded.TYPE: self.on_batches_uploaded}
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
            batch_handler=self.dispatch,
        )

    async def dispatch(self, decoded: list[tuple[Event, Envelope]]) -> None:
        by_type: dict[str, list[tuple[Event, Envelope]]] = {}
        for event, env in decoded:
            by_type.setdefault(env.type, []).append((event, env))
        for typ, group in by_type.items():
            handler = self.handlers.get(typ)
            if handler is None:
                for _, env in group:
                    await self.loop.dead_letter_env(env, f"no handler for {typ} in conflict-service")
                continue
            await handler(group)

    async def on_batches_uploaded(self, group: Sequence[tuple[Event, Envelope]]) -> None:
        """A poll's batches in ``apply_concurrency`` transactions at once, each holding every
        batch of its devices in poll order (a device's batches stay in order; devices never
        share a transaction across groups): one transaction's Python work overlaps another's
        wait on PostgreSQL. The next poll starts once all are committed."""
        parts = split_by_device(group, self.apply_concurrency)
        if len(parts) == 1:
            await self._apply_group(parts[0])
        else:
            await asyncio.gather(*(self._apply_group(part) for part in parts))

    async def _apply_group(self, group: Sequence[tuple[Event, Envelope]]) -> None:
        batches = [e for e, _ in group if isinstance(e, BatchUploaded)]
        try:
            await db.while_away(lambda: self.applier.apply(batches), TRANSIENT, what="device batches")
            return
        except Exception:
            log.warning("set-wise apply failed; applying batches one at a time", exc_info=True)
        for event, env in group:
            try:  # the database away is waited out here too: only a batch failing on its own is refused
                await db.while_away(lambda event=event: self.applier.apply([event]), TRANSIENT, what="device batch")  # type: ignore[misc]
            except Exception as exc:
                log.exception("batch could not be applied", extra={"event_id": env.id})
                await self.loop.dead_letter_env(env, f"apply failed: {type(exc).__name__}: {exc}")
                try:
                    await db.while_away(
                        lambda event=event, exc=exc: self.applier.refuse(
                            event, "unprocessable", f"the server could not store this batch: {exc}"
                        ),  # type: ignore[misc]
                        TRANSIENT,
                        what="refusal",
                    )
                except Exception:
                    log.exception("could not answer a refused batch", extra={"event_id": env.id})

    async def start(self) -> None:
        await self.loop.start()

    async def run(self) -> None:
        await self.loop.run()

    async def stop(self) -> None:
        await self.loop.stop()


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
