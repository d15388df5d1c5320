"""Applies ordered record changes in one transaction, set-wise: fetches every touched record in
one query, decides each change in memory (permission, validation, conflict policy), then writes
the records, the conflicts log, the sync error ledger and the outbox events in a few statements.

Device batches and server API writes both come through here, so both bump versions the same way
and both reach devices as RecordChanged events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import asyncpg
import orjson

from conflict_service import directory
from conflict_service.policy import Decision, Outcome, ProposedChange, RecordState, decide, effective_policy
from conflict_service.validation import EntityMeta, LookupRef, check_fields
from offsync_shared import outbox
from offsync_shared.domain.org import (
    OP_FOR_CHANGE,
    Actor,
    Operation,
    OwnerRequest,
    Ownership,
    OwnershipRefused,
    may,
    ownership_for_create,
)
from offsync_shared.envelope import Envelope
from offsync_shared.errors import Conflict, Forbidden, NotFound, OffsyncError, PreconditionFailed, ValidationFailed
from offsync_shared.events.batch_results import BatchApplied, ChangeResult
from offsync_shared.events.device_batches import BatchUploaded, Change
from offsync_shared.events.records import RecordChanged

log = logging.getLogger(__name__)

SCHEMA = "data"
_COLUMNS = (
    "entity, id, version, owner_id, owner_type, business_unit_id, attributes, deleted, field_versions, created_by"
)


@dataclass
class Row:
    """A record's current state while a transaction is deciding changes."""

    entity: str
    id: str
    state: RecordState
    owner: Ownership
    exists_in_db: bool

    def wire(self) -> dict[str, Any]:
        return {"version": self.state.version, "deleted": self.state.deleted, "attributes": dict(self.state.attributes)}


@dataclass(frozen=True)
class ChangeItem:
    """One change to apply, with who made it and where it came from."""

    user_id: str
    change: Change
    device_id: str | None = None
    batch_id: str | None = None
    # strict: a version mismatch is refused (HTTP If-Match), never resolved by the policy.
    strict: bool = False
    owner: OwnerRequest | None = None  # owner named on create (API); default: the creator


@dataclass
class ItemResult:
    result: ChangeResult
    decision: Decision | None = None
    row: Row | None = None
    field: str | None = None
    # A rejected change's error class: what the records API raises for it (its code is result.code).
    error: type[OffsyncError] | None = None


@dataclass
class Topics:
    records: str
    batch_results: str


class RecordEvent(NamedTuple):
    """A written version whose RecordChanged is built at write time (with the commit's clock)."""

    entity: str
    id: str
    state: RecordState
    owner: Ownership
    source: dict[str, Any]


class ConflictEntry(NamedTuple):
    """A row of data.conflicts, in its column order (written with one executemany)."""

    entity: str
    record_id: str
    user_id: str
    device_id: str | None
    batch_id: str | None
    seq: int
    op: str
    policy: str
    outcome: str
    base_version: int | None
    server_version: int
    server_record: str  # JSON text
    client_change: str  # JSON text
    result_record: str  # JSON text
    lost_fields: list[str]


class SyncErrorEntry(NamedTuple):
    """A row of data.sync_errors, in its column order (written with one executemany)."""

    user_id: str
    device_id: str | None
    batch_id: str | None
    seq: int
    entity: str
    record_id: str
    op: str
    code: str
    message: str | None
    field: str | None
    change: str  # JSON text


@dataclass
class _Pending:
    """Everything one transaction will write once all changes are decided."""

    dirty: dict[tuple[str, str], Row] = field(default_factory=dict)
    events: list[RecordEvent] = field(default_factory=list)
    conflicts: list[ConflictEntry] = field(default_factory=list)
    errors: list[SyncErrorEntry] = field(default_factory=list)
    modified_by: dict[tuple[str, str], str] = field(default_factory=dict)
    # (batch id, record) -> (base version a change of that batch was sent with, version it produced)
    chain: dict[tuple[str, tuple[str, str]], tuple[int | None, int]] = field(default_factory=dict)


def _reject(change: Change, error: type[OffsyncError], message: str, field_name: str | None = None) -> ItemResult:
    return ItemResult(
        ChangeResult(
            seq=change.seq, entity=change.entity, id=change.id, status="rejected", code=error.code, message=message
        ),
        field=field_name,
        error=error,
    )


async def _fetch_rows(conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Row]:
    if not keys:
        return {}
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM {SCHEMA}.records
             WHERE (entity, id) IN (SELECT e, i FROM unnest($1::text[], $2::text[]) AS k(e, i))
             ORDER BY entity, id FOR UPDATE""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {
        (r["entity"], r["id"]): Row(
            r["entity"],
            r["id"],
            RecordState(r["version"], r["deleted"], r["attributes"], r["field_versions"], r["created_by"]),
            Ownership(r["owner_id"], r["owner_type"], r["business_unit_id"]),
            True,
        )
        for r in rows
    }


async def existing_records(conn: asyncpg.Connection, refs: Sequence[LookupRef]) -> dict[tuple[str, str], Ownership]:
    """The live records the lookups name, with their ownership (a lookup needs read access)."""
    refs = [r for r in refs if r.target not in directory.ADMIN_TARGETS]
    if not refs:
        return {}
    rows = await conn.fetch(
        f"""SELECT entity, id, owner_id, owner_type, business_unit_id FROM {SCHEMA}.records
             WHERE (entity, id) IN (SELECT DISTINCT e, i FROM unnest($1::text[], $2::text[]) AS k(e, i)) AND NOT deleted""",
        [r.target for r in refs],
        [r.id for r in refs],
    )
    return {(r["entity"], r["id"]): Ownership(r["owner_id"], r["owner_type"], r["business_unit_id"]) for r in rows}


@dataclass(frozen=True)
class Owners:
    """The business units of the owners creates name, and which named business units exist."""

    units: Mapping[tuple[str, str], str]
    business_units: set[str]


@dataclass(frozen=True)
class Lookups:
    """The lookup targets a set of changes names: live records (with their owners) and the org
    model's users, teams and business units."""

    records: Mapping[tuple[str, str], Ownership]
    admin: set[tuple[str, str]]

    def readable(
        self,
        ref: LookupRef,
        actor: Actor,
        metas: Mapping[str, EntityMeta],
        rows: Mapping[tuple[str, str], Row],
        pending: _Pending,
    ) -> bool:
        key = (ref.target, ref.id)
        if ref.target in directory.ADMIN_TARGETS:
            return key in self.admin
        row = rows.get(key)
        if row is not None and key in pending.dirty:  # written earlier in this transaction
            owner: Ownership | None = None if row.state.deleted else row.owner
        else:
            owner = self.records.get(key)
        meta = metas.get(ref.target)
        if owner is None or meta is None:
            return False
        return may(actor, Operation.READ, ref.target, meta.ownership, owner)


class Applier:
    """Decides and writes changes; one instance per worker, stateless between transactions."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    async def apply_items(
        self,
        conn: asyncpg.Connection,
        items: Sequence[ChangeItem],
        answers: Callable[[list[ItemResult]], list[tuple[str, Envelope]]] | None = None,
        known_actors: Mapping[str, Actor] | None = None,
        stored: dict[tuple[str, str], asyncpg.Record] | None = None,
    ) -> list[ItemResult]:
        """Apply ``items`` in order inside the caller's transaction; returns one result per item.

        ``answers`` turns the results into events that go to the outbox ahead of the record
        events, so a device's acknowledgement is not queued behind every record it changed.
        ``known_actors`` (the records API's caller, just read) saves reading them again;
        ``stored``, when given, receives every written row as stored (all columns)."""
        if not items:
            return []
        items = list(items)
        org, metas = await directory.settings_and_entities(conn, {it.change.entity for it in items})
        user_ids = {it.user_id for it in items}
        if known_actors is not None and user_ids <= known_actors.keys():
            actors: Mapping[str, Actor] = known_actors
        else:
            actors = await directory.actors(conn, user_ids)
        keys = sorted({(it.change.entity, it.change.id) for it in items})
        rows = await _fetch_rows(conn, keys)

        # Validate every change up front so lookup targets can be checked in one query.
        checked: list[tuple[Any, list[LookupRef]]] = []
        all_refs: list[LookupRef] = []
        for n, it in enumerate(items):
            meta = metas.get(it.change.entity)
            if meta is None or it.change.op == "delete":
                checked.append((None, []))
                continue
            creating = it.change.op == "create" and (it.change.entity, it.change.id) not in rows
            err, refs, coerced = check_fields(meta, it.change.fields, creating=creating)
            if err is None and coerced != it.change.fields:  # values put in their stored form
                items[n] = replace(it, change=it.change.model_copy(update={"fields": coerced}))
            checked.append((err, refs))
            all_refs.extend(refs)
        lookups = Lookups(await existing_records(conn, all_refs), await directory.existing_admin_refs(conn, all_refs))
        missing = {r.target for r in all_refs if r.target not in metas and r.target not in directory.ADMIN_TARGETS}
        if missing:
            metas = {**metas, **await directory.entities(conn, missing)}
        requests = [it.owner for it in items if it.owner is not None and it.change.op == "create"]
        owners = Owners(
            await directory.owner_units(conn, [(r.owner_type, r.owner_id) for r in requests if r.owner_id is not None]),
            await directory.existing_business_units(conn, [r.business_unit_id for r in requests if r.business_unit_id]),
        )

        pending = _Pending()
        results: list[ItemResult] = []
        for it, (err, refs) in zip(items, checked, strict=True):
            res = self._decide_one(it, err, refs, lookups, owners, org.conflict_detection, metas, actors, rows, pending)
            results.append(res)
        await self._write(conn, pending, answers(results) if answers else [], stored)
        return results

    def _decide_one(
        self,
        it: ChangeItem,
        err: Any,
        refs: list[LookupRef],
        lookups: Lookups,
        owners: Owners,
        conflict_detection: bool,
        metas: Mapping[str, EntityMeta],
        actors: Mapping[str, Actor],
        rows: dict[tuple[str, str], Row],
        pending: _Pending,
    ) -> ItemResult:
        ch = it.change
        meta = metas.get(ch.entity)
        actor = actors.get(it.user_id)
        if meta is None:
            res = _reject(ch, ValidationFailed, f"unknown entity {ch.entity!r}", "entity")
        elif actor is None or not actor.enabled:
            res = _reject(ch, Forbidden, "user is unknown or disabled")
        else:
            res = self._decide_known(
                it, meta, actor, err, refs, lookups, owners, conflict_detection, metas, rows, pending
            )
        if res.result.status == "rejected" or (res.decision is not None and not res.decision.applied_as_sent):
            code = res.result.code or (res.decision.outcome.value if res.decision else "rejected")
            pending.errors.append(
                SyncErrorEntry(
                    user_id=it.user_id,
                    device_id=it.device_id,
                    batch_id=it.batch_id,
                    seq=ch.seq,
                    entity=ch.entity,
                    record_id=ch.id,
                    op=ch.op,
                    code=code,
                    message=res.result.message,
                    field=res.field,
                    change=orjson.dumps(ch.model_dump(mode="json")).decode(),
                )
            )
        return res

    def _decide_known(
        self,
        it: ChangeItem,
        meta: EntityMeta,
        actor: Actor,
        err: Any,
        refs: list[LookupRef],
        lookups: Lookups,
        owners: Owners,
        conflict_detection: bool,
        metas: Mapping[str, EntityMeta],
        rows: dict[tuple[str, str], Row],
        pending: _Pending,
    ) -> ItemResult:
        ch = it.change
        key = (ch.entity, ch.id)
        row = rows.get(key)
        # Access first; a record the user may not read is reported as missing (no leak).
        if row is None:
            if ch.op != "create":
                return _reject(ch, NotFound, f"no {ch.entity} record {ch.id}")
            try:
                owner = ownership_for_create(actor, meta.ownership, it.owner, owners.units, owners.business_units)
            except OwnershipRefused as exc:
                return _reject(ch, ValidationFailed, exc.message, exc.field)
            if not may(actor, Operation.CREATE, ch.entity, meta.ownership, owner):
                return _reject(ch, Forbidden, f"not allowed to create {ch.entity} records for this owner")
        else:
            owner = row.owner
            if not may(actor, Operation.READ, ch.entity, meta.ownership, owner):
                if ch.op == "create":
                    return _reject(ch, Forbidden, f"record id {ch.id} is not available")
                return _reject(ch, NotFound, f"no {ch.entity} record {ch.id}")
            op = Operation.WRITE if ch.op == "create" else OP_FOR_CHANGE[ch.op]
            if not may(actor, op, ch.entity, meta.ownership, owner):
                return _reject(ch, Forbidden, f"not allowed to {op.value} this {ch.entity} record")
        if err is not None:
            return _reject(ch, ValidationFailed, err.message, err.field)
        for ref in refs:
            # A lookup to a record the user cannot read is answered as if it did not exist:
            # the same 422 either way, so a write cannot probe for records (docs/conflicts.md).
            if not lookups.readable(ref, actor, metas, rows, pending):
                return _reject(ch, ValidationFailed, f"{ref.field}: no {ref.target} with id {ref.id}", ref.field)

        policy, fallback = effective_policy(conflict_detection, meta.conflict_policy)
        server = row.state if row is not None else None
        # Several changes to one record in one batch were all based on what the device last
        # downloaded; each later one builds on the version the earlier one produced.
        base = ch.base_version
        chain_key = (it.batch_id, key) if it.batch_id else None
        if chain_key is not None and chain_key in pending.chain and pending.chain[chain_key][0] == base:
            base = pending.chain[chain_key][1]
        proposed = ProposedChange(ch.op, ch.fields, base, it.user_id)
        decision = decide(server, proposed, policy, fallback)
        if decision.outcome is Outcome.NOT_FOUND:
            return _reject(ch, NotFound, f"no {ch.entity} record {ch.id}")
        if decision.conflict and it.strict:
            error = Conflict if ch.op == "create" else PreconditionFailed
            return _reject(ch, error, f"record is at version {server.version if server else 0}")

        assert decision.result is not None
        if decision.written:
            state = decision.result
            if row is None:
                state = replace(state, created_by=it.user_id)
            new_row = Row(ch.entity, ch.id, state, owner, row.exists_in_db if row else False)
            rows[key] = new_row
            pending.dirty[key] = new_row
            if chain_key is not None:
                pending.chain[chain_key] = (ch.base_version, state.version)
            pending.modified_by[key] = it.user_id
            source: dict[str, Any] = (
                {"device_id": it.device_id, "batch_id": it.batch_id} if it.device_id else {"api": it.user_id}
            )
            pending.events.append(RecordEvent(ch.entity, ch.id, state, owner, source))
        current = rows[key] if key in rows else None
        if decision.conflict:
            assert server is not None
            pending.conflicts.append(
                ConflictEntry(
                    entity=ch.entity,
                    record_id=ch.id,
                    user_id=it.user_id,
                    device_id=it.device_id,
                    batch_id=it.batch_id,
                    seq=ch.seq,
                    op=ch.op,
                    policy=(decision.policy or policy).value,
                    outcome=decision.outcome.value,
                    base_version=ch.base_version,
                    server_version=server.version,
                    server_record=orjson.dumps(
                        {"version": server.version, "deleted": server.deleted, "attributes": dict(server.attributes)}
                    ).decode(),
                    client_change=orjson.dumps(ch.model_dump(mode="json")).decode(),
                    result_record=orjson.dumps(current.wire() if current else {}).decode(),
                    lost_fields=list(decision.lost_fields),
                )
            )
            result = ChangeResult(
                seq=ch.seq,
                entity=ch.entity,
                id=ch.id,
                status="conflict",
                version=decision.result.version,
                record=current.wire() if current else None,
                code=decision.outcome.value,
                message=(f"lost fields: {', '.join(decision.lost_fields)}" if decision.lost_fields else None),
            )
        else:
            result = ChangeResult(
                seq=ch.seq,
                entity=ch.entity,
                id=ch.id,
                status="applied",
                version=decision.result.version,
                code=None if decision.outcome is Outcome.APPLIED else decision.outcome.value,
            )
        return ItemResult(result, decision, current)

    async def _write(
        self,
        conn: asyncpg.Connection,
        p: _Pending,
        first: list[tuple[str, Envelope]],
        stored: dict[tuple[str, str], asyncpg.Record] | None,
    ) -> None:
        if p.dirty:
            rows = list(p.dirty.values())
            written = await conn.fetch(
                f"""INSERT INTO {SCHEMA}.records AS r ({_COLUMNS}, modified_by)
                    SELECT e, i, v, o, ot, bu, a::jsonb, d, fv::jsonb, cb, mb
                      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                  $7::text[], $8::bool[], $9::text[], $10::text[], $11::text[])
                           AS t(e, i, v, o, ot, bu, a, d, fv, cb, mb)
                    ON CONFLICT (entity, id) DO UPDATE SET version = EXCLUDED.version,
                       attributes = EXCLUDED.attributes, deleted = EXCLUDED.deleted,
                       field_versions = EXCLUDED.field_versions, owner_id = EXCLUDED.owner_id,
                       owner_type = EXCLUDED.owner_type, business_unit_id = EXCLUDED.business_unit_id,
                       modified_at = now(), modified_by = EXCLUDED.modified_by"""
                + (" RETURNING *" if stored is not None else ""),
                [r.entity for r in rows],
                [r.id for r in rows],
                [r.state.version for r in rows],
                [r.owner.owner_id for r in rows],
                [r.owner.owner_type for r in rows],
                [r.owner.business_unit_id for r in rows],
                [orjson.dumps(dict(r.state.attributes)).decode() for r in rows],
                [r.state.deleted for r in rows],
                [orjson.dumps(dict(r.state.field_versions)).decode() for r in rows],
                [r.state.created_by for r in rows],
                [p.modified_by[(r.entity, r.id)] for r in rows],
            )
            if stored is not None:
                stored.update(((r["entity"], r["id"]), r) for r in written)
        if p.conflicts:
            await conn.executemany(
                f"""INSERT INTO {SCHEMA}.conflicts(entity, record_id, user_id, device_id, batch_id, seq, op, policy,
                       outcome, base_version, server_version, server_record, client_change, result_record, lost_fields)
                    VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12::text::jsonb,$13::text::jsonb,$14::text::jsonb,$15)""",
                p.conflicts,
            )
        if p.errors:
            await conn.executemany(
                f"""INSERT INTO {SCHEMA}.sync_errors(user_id, device_id, batch_id, seq, entity, record_id, op, code,
                       message, field, change) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11::text::jsonb)""",
                p.errors,
            )
        now = time.time()  # the commit follows right after these writes
        topic = self.topics.records
        await write_outbox(
            conn,
            first
            + [
                (
                    topic,
                    RecordChanged(
                        entity=entity,
                        id=rid,
                        version=st.version,
                        deleted=st.deleted,
                        owner_id=owner.owner_id,
                        owner_type=owner.owner_type,
                        business_unit_id=owner.business_unit_id,
                        attributes=dict(st.attributes),
                        committed_at=now,
                        source=source,
                    ).envelope(f"{entity}:{rid}"),
                )
                for entity, rid, st, owner, source in p.events
            ],
        )


async def write_outbox(conn: asyncpg.Connection, rows: Sequence[tuple[str, Envelope]]) -> None:
    """Add events to the data outbox in one statement."""
    await outbox.insert_rows(conn, SCHEMA, [(topic, env.key, env.encode()) for topic, env in rows])


class BatchApplier:
    """Applies uploaded device batches: answers a batch id seen before from ``data.batches``,
    applies the rest in order, and stores and emits each batch's answer."""

    def __init__(self, pool: asyncpg.Pool, topics: Topics, relay: outbox.OutboxRelay | None = None) -> None:
        self.pool = pool
        self.topics = topics
        self.applier = Applier(topics)
        self.relay = relay  # answers and record events are sent right after the commit

    async def apply(self, batches: Sequence[BatchUploaded]) -> list[BatchApplied]:
        async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay):
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
                await conn.execute(
                    f"""INSERT INTO {SCHEMA}.batches(batch_id, device_id, user_id, results) VALUES ($1, $2, $3, $4::text::jsonb)
                        ON CONFLICT (batch_id) DO NOTHING""",
                    b.batch_id,
                    b.device_id,
                    b.user_id,
                    orjson.dumps([r.model_dump(mode="json") for r in answer.results]).decode(),
                )
                await write_outbox(conn, [(self.topics.batch_results, answer.envelope(b.device_id))])
        return answer

    async def apply_in(self, conn: asyncpg.Connection, batches: Sequence[BatchUploaded]) -> list[BatchApplied]:
        devices = sorted({b.device_id for b in batches})
        # Serialize per device across workers (a rebalance can hand a partition over while the
        # old owner is still applying), so the "seen before?" check below sees the other's commit.
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT hashtext('device:' || d) AS h FROM unnest($1::text[]) d ORDER BY 1) s",
            devices,
        )
        stored = {
            r["batch_id"]: r
            for r in await conn.fetch(
                f"SELECT batch_id, device_id, user_id, results FROM {SCHEMA}.batches WHERE batch_id = ANY($1::text[])",
                [b.batch_id for b in batches],
            )
        }
        answers: list[BatchApplied] = []
        fresh: list[BatchUploaded] = []
        seen_now: set[str] = set()
        for b in batches:
            if b.batch_id in stored:
                r = stored[b.batch_id]
                answers.append(
                    BatchApplied(
                        batch_id=b.batch_id,
                        device_id=r["device_id"],
                        user_id=r["user_id"],
                        results=[ChangeResult.model_validate(x) for x in r["results"]],
                    )
                )
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

        def answer(results: list[ItemResult]) -> list[tuple[str, Envelope]]:
            by_batch: dict[str, list[ChangeResult]] = {b.batch_id: [] for b in fresh}
            for it, res in zip(items, results, strict=True):
                by_batch[it.batch_id or ""].append(res.result)
            new_answers.extend(
                BatchApplied(
                    batch_id=b.batch_id, device_id=b.device_id, user_id=b.user_id, results=by_batch[b.batch_id]
                )
                for b in fresh
            )
            return [(self.topics.batch_results, a.envelope(a.device_id)) for a in answers + new_answers]

        if items:
            await self.applier.apply_items(conn, items, answer)
        else:
            await write_outbox(conn, answer([]))
        if new_answers:
            await conn.execute(
                f"""INSERT INTO {SCHEMA}.batches(batch_id, device_id, user_id, results)
                    SELECT b, d, u, r::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(b, d, u, r)""",
                [a.batch_id for a in new_answers],
                [a.device_id for a in new_answers],
                [a.user_id for a in new_answers],
                [orjson.dumps([r.model_dump(mode="json") for r in a.results]).decode() for a in new_answers],
            )
        return answers + new_answers
