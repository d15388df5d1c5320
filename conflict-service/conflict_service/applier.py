"""Applies ordered record changes in one transaction, set-wise: reads every touched record (and
what the decision needs) in a few queries, lets ``batch_decisions.decide_batch`` decide them in
memory, then performs the effects (records, conflicts log, sync error ledger, outbox events) in
a few statements. It only reads and writes: every decision is batch_decisions'.

Device batches and server API writes both come through here, so both bump versions the same way
and both reach devices as RecordsChanged events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg

from conflict_service import batch_answers, conflict_log, directory, record_store, sync_error_ledger
from conflict_service.batch_decisions import (
    ChangeItem,
    Checked,
    Effects,
    Facts,
    ItemResult,
    check_items,
    decide_batch,
)
from conflict_service.data_outbox import write_outbox
from conflict_service.validation import ADMIN_TARGETS, LookupRef
from offsync_shared import outbox
from offsync_shared.domain.org import Actor
from offsync_shared.envelope import Envelope
from offsync_shared.events import records as record_events
from offsync_shared.events.batch_results import BatchApplied, ChangeResult
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.topics import BATCH_RESULTS, RECORDS

log = logging.getLogger(__name__)

# Each retry needs another creator of one of the poll's new ids to commit in between.
CREATE_RACE_RETRIES = 3


@dataclass
class Topics:
    records: str
    batch_results: str


def topics_for(prefix: str) -> Topics:
    return Topics(records=RECORDS.full(prefix), batch_results=BATCH_RESULTS.full(prefix))


def record_refs(refs: Sequence[LookupRef]) -> list[tuple[str, str]]:
    """The lookups that point at records (not at the org model's users, teams, units)."""
    return [(r.target, r.id) for r in refs if r.target not in ADMIN_TARGETS]


class Answers(NamedTuple):
    """What a caller of :meth:`Applier.apply_items` adds for the results: events sent ahead of
    the record events, and the statements storing them (run in the transaction's write)."""

    events: list[tuple[str, Envelope]]
    writes: list[outbox.Also | None]


class Applied(NamedTuple):
    results: list[ItemResult]  # one per item, in order
    at: datetime | None  # the transaction's now(): the modified_at of every row written (None: no items)


class Applier:
    """Reads, decides and writes changes; one instance per worker, stateless between transactions."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    async def apply_items(
        self,
        conn: asyncpg.Connection,
        items: Sequence[ChangeItem],
        answers: Callable[[list[ItemResult]], Answers] | None = None,
        known_actors: Mapping[str, Actor] | None = None,
        stored: dict[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> Applied:
        """Apply ``items`` in order inside the caller's transaction.

        ``answers`` turns the results into events that go to the outbox ahead of the record
        events, so a device's acknowledgement is not queued behind every record it changed.
        ``known_actors`` (the records API's caller, just read) saves reading them again;
        ``stored``, when given, receives every written row as stored (all columns)."""
        if not items:
            return Applied([], None)
        facts, checked = await self._read(conn, items, known_actors)
        decided = decide_batch(checked, facts)
        at = await self._perform(
            conn, decided.effects, answers(decided.results) if answers else Answers([], []), stored
        )
        return Applied(decided.results, at)

    async def _read(
        self, conn: asyncpg.Connection, items: Sequence[ChangeItem], known_actors: Mapping[str, Actor] | None
    ) -> tuple[Facts, list[Checked]]:
        org, metas = await directory.settings_and_entities(conn, {it.change.entity for it in items})
        user_ids = {it.user_id for it in items}
        if known_actors is not None and user_ids <= known_actors.keys():
            actors: Mapping[str, Actor] = known_actors
        else:
            actors = await directory.actors(conn, user_ids)
        records = await record_store.lock(conn, {(it.change.entity, it.change.id) for it in items})
        checked = check_items(items, metas, records.keys())
        refs = [r for c in checked for r in c.refs]
        missing = {r.target for r in refs if r.target not in metas and r.target not in ADMIN_TARGETS}
        if missing:
            metas = {**metas, **await directory.entities(conn, missing)}
        requests = [c.item.owner for c in checked if c.item.owner is not None and c.item.change.op == "create"]
        facts = Facts(
            conflict_detection=org.conflict_detection,
            entities=metas,
            actors=actors,
            records=records,
            lookup_owners=await record_store.live_owners(conn, record_refs(refs)),
            admin_refs=await directory.existing_admin_refs(conn, refs),
            owner_units=await directory.owner_units(
                conn, [(r.owner_type, r.owner_id) for r in requests if r.owner_id is not None]
            ),
            business_units=await directory.existing_business_units(
                conn, [r.business_unit_id for r in requests if r.business_unit_id]
            ),
        )
        return facts, checked

    async def _perform(
        self,
        conn: asyncpg.Connection,
        effects: Effects,
        first: Answers,
        stored: dict[tuple[str, str], Mapping[str, Any]] | None,
    ) -> datetime:
        """Every write of the transaction in one statement (the outbox insert's): records,
        conflicts log, sync error ledger, the caller's answers. Returns the transaction's now()."""
        now = time.time()  # the commit follows right after these writes
        occurred_at = datetime.fromtimestamp(now, UTC).isoformat()
        topic = self.topics.records
        records = [
            (topic, env) for env in record_events.envelopes((e.payload(now) for e in effects.events), occurred_at)
        ]
        done = await write_outbox(
            conn,
            first.events + records,
            [(e.record.entity, e.record.id) for e in effects.events],
            [
                *record_store.write(effects.writes, returning=stored is not None),
                conflict_log.append(effects.conflicts),
                sync_error_ledger.append(effects.sync_errors),
                *first.writes,
            ],
        )
        if stored is not None:
            rows = [record_store.stored_row(r) for part in done.returned for r in part]  # only the records return
            stored.update(((r["entity"], r["id"]), r) for r in rows)
        return done.now


class BatchApplier:
    """Applies uploaded device batches: answers a batch id seen before from ``data.batches``,
    applies the rest in order, and stores and emits each batch's answer."""

    def __init__(self, pool: asyncpg.Pool, topics: Topics, relay: outbox.OutboxRelay | None = None) -> None:
        self.pool = pool
        self.topics = topics
        self.applier = Applier(topics)
        self.relay = relay  # answers and record events are sent right after the commit

    async def apply(self, batches: Sequence[BatchUploaded]) -> list[BatchApplied]:
        """Apply the batches in one transaction. One that lost a race to create a record id
        (record_store.write: the other creator committed first) rolled back whole and is run
        again: its lock then sees the winner's row and the create is decided against it."""
        for attempt in range(CREATE_RACE_RETRIES + 1):
            try:
                return await self._apply_once(batches)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "records_pkey" or attempt == CREATE_RACE_RETRIES:
                    raise
                log.info("a create lost a race for its record id; applying the batches again")
        raise AssertionError("unreachable")

    async def _apply_once(self, batches: Sequence[BatchUploaded]) -> list[BatchApplied]:
        # Answers go out before the poll's record events (one send each): the devices' acks
        # do not wait for the broker to take thousands of RecordChanged.
        async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay, (self.topics.batch_results,)):
            async with conn.transaction():
                return await self.apply_in(conn, batches)

    async def refuse(self, b: BatchUploaded, code: str, message: str) -> BatchApplied:
        """Answer a batch the database would not take (even alone) with every change rejected, so
        the device is not left waiting and later batches proceed; stored like any answer."""
        answer = BatchApplied(
            batch_id=b.batch_id,
            device_id=b.device_id,
            user_id=b.user_id,
            results=[
                ChangeResult(seq=c.seq, entity=c.entity, id=c.id, status="rejected", code=code, message=message[:500])
                for c in b.changes
            ],
        )
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await batch_answers.store_unless_known(conn, answer)
                await write_outbox(conn, [(self.topics.batch_results, answer.envelope(b.device_id))])
        return answer

    async def apply_in(self, conn: asyncpg.Connection, batches: Sequence[BatchUploaded]) -> list[BatchApplied]:
        # Serialize per device across workers (a rebalance can hand a partition over while the
        # old owner is still applying), so the "seen before?" check below sees the other's commit.
        await batch_answers.lock_devices(conn, [b.device_id for b in batches])
        known = await batch_answers.stored(conn, [b.batch_id for b in batches])
        answers: list[BatchApplied] = []
        fresh: list[BatchUploaded] = []
        seen_now: set[str] = set()
        for b in batches:
            if b.batch_id in known:
                answers.append(known[b.batch_id])
            elif b.batch_id in seen_now:
                continue  # the same batch twice in one poll: the first answer stands and is re-sent below
            else:
                seen_now.add(b.batch_id)
                fresh.append(b)
        items = [
            ChangeItem(b.user_id, ch, b.device_id, b.batch_id)
            for b in fresh
            for ch in sorted(b.changes, key=lambda c: c.seq)
        ]
        new_answers: list[BatchApplied] = []
        sent: dict[str, Envelope] = {}  # batch id -> its answer's envelope (its results stored as sent)

        def answer(results: list[ItemResult]) -> Answers:
            by_batch: dict[str, list[ChangeResult]] = {b.batch_id: [] for b in fresh}
            for it, res in zip(items, results, strict=True):
                by_batch[it.batch_id or ""].append(res.result)
            new_answers.extend(
                BatchApplied(
                    batch_id=b.batch_id, device_id=b.device_id, user_id=b.user_id, results=by_batch[b.batch_id]
                )
                for b in fresh
            )
            sent.update((a.batch_id, a.envelope(a.device_id)) for a in answers + new_answers)
            return Answers(
                [(self.topics.batch_results, sent[a.batch_id]) for a in answers + new_answers],
                [batch_answers.store(new_answers, [sent[a.batch_id].payload["results"] for a in new_answers])],
            )

        if items:
            await self.applier.apply_items(conn, items, answer)
        else:
            repeated = answer([])  # no change to apply: answers given before, or to empty batches
            await write_outbox(conn, repeated.events, also=repeated.writes)
        return answers + new_answers
