"""Decides a batch of ordered changes against what the applier read (pure): permission,
validation, lookups, the conflict policy and the chaining of several changes to one record;
returns each change's result and the effects one transaction must perform (record writes,
conflicts-log entries, sync-error entries, RecordChanged events)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from conflict_service.policy import Decision, Outcome, Policy, ProposedChange, RecordState, decide, effective_policy
from conflict_service.validation import ADMIN_TARGETS, EntityMeta, FieldError, LookupRef, check_fields
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
from offsync_shared.errors import Conflict, Forbidden, NotFound, OffsyncError, PreconditionFailed, ValidationFailed
from offsync_shared.events.batch_results import ChangeResult
from offsync_shared.events.device_batches import Change
from offsync_shared.events.records import change_payload

RecordKey = tuple[str, str]  # (entity, id)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as stored: its state for the policy and who owns it."""

    entity: str
    id: str
    state: RecordState
    owner: Ownership

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


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a change was refused: the error class the records API raises for it (its ``code`` is
    the result's), the message and the field at fault."""

    error: type[OffsyncError]
    message: str
    field: str | None = None

    def exception(self, index: int | None = None, record_id: str | None = None) -> OffsyncError:
        """The error to raise; in a batch, the message and details name the change."""
        if index is None:
            return self.error(self.message, field=self.field)
        return self.error(
            f"changes[{index}] ({record_id}): {self.message}",
            field=self.field,
            details={"index": index, "id": record_id},
        )


@dataclass(frozen=True)
class ItemResult:
    """One change's answer (as the device gets it) and how it was decided."""

    result: ChangeResult
    decision: Decision | None = None
    rejection: Rejection | None = None

    @property
    def applied_as_sent(self) -> bool:
        """The change made it as sent (not rejected, nothing of it lost to a conflict)."""
        return self.rejection is None and (self.decision is None or self.decision.applied_as_sent)


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """A record's last state in the batch, to write into data.records."""

    record: StoredRecord
    modified_by: str
    # No row at all when the transaction locked the records it touches (not even a tombstone):
    # inserted, so a concurrent creator of the same id fails the insert instead of being
    # overwritten at the same version.
    new: bool = False


@dataclass(frozen=True, slots=True)
class RecordEvent:
    """A written version, announced as RecordChanged once the commit's clock is known."""

    record: StoredRecord
    source: Mapping[str, str | None]

    def payload(self, committed_at: float) -> dict[str, Any]:
        """The RecordChanged payload (attributes are JSON values in their stored form)."""
        r = self.record
        return change_payload(
            r.entity,
            r.id,
            r.state.version,
            r.state.deleted,
            r.owner.owner_id,
            r.owner.owner_type,
            r.owner.business_unit_id,
            dict(r.state.attributes),
            committed_at,
            dict(self.source),
        )


@dataclass(frozen=True, slots=True)
class ConflictEntry:
    """A concurrent server change met by a change, for data.conflicts."""

    item: ChangeItem
    policy: Policy
    outcome: Outcome
    server: RecordState
    result: StoredRecord | None
    lost_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SyncErrorEntry:
    """A change that did not make it as sent, for the sync error ledger (data.sync_errors)."""

    item: ChangeItem
    code: str
    message: str | None
    field: str | None


@dataclass
class Effects:
    """Everything one transaction writes once a batch is decided, in the order decided."""

    writes: list[RecordWrite] = field(default_factory=list)
    conflicts: list[ConflictEntry] = field(default_factory=list)
    sync_errors: list[SyncErrorEntry] = field(default_factory=list)
    events: list[RecordEvent] = field(default_factory=list)


@dataclass(frozen=True)
class BatchDecision:
    results: list[ItemResult]
    effects: Effects


@dataclass(frozen=True)
class Checked:
    """A change with its values in stored form, its first validation problem and its lookups."""

    item: ChangeItem
    error: FieldError | None = None
    refs: tuple[LookupRef, ...] = ()


@dataclass(frozen=True)
class Facts:
    """What the applier read, in its transaction, for a batch."""

    conflict_detection: bool
    entities: Mapping[str, EntityMeta]
    actors: Mapping[str, Actor]
    records: Mapping[RecordKey, StoredRecord]  # the touched records, locked
    lookup_owners: Mapping[RecordKey, Ownership] = field(default_factory=dict)  # live lookup targets
    admin_refs: Collection[RecordKey] = frozenset()  # lookup targets in the org model that exist
    owner_units: Mapping[tuple[str, str], str] = field(default_factory=dict)  # named owners' units
    business_units: Collection[str] = frozenset()  # named business units that exist


def check_items(
    items: Sequence[ChangeItem], entities: Mapping[str, EntityMeta], existing: Collection[RecordKey]
) -> list[Checked]:
    """Validate every change's values up front (so lookup targets can be read in one query),
    putting them in their stored form; ``existing``: the touched records that exist."""
    out: list[Checked] = []
    for it in items:
        meta = entities.get(it.change.entity)
        if meta is None or it.change.op == "delete":
            out.append(Checked(it))
            continue
        creating = it.change.op == "create" and (it.change.entity, it.change.id) not in existing
        err, refs, coerced = check_fields(meta, it.change.fields, creating=creating)
        if err is None and coerced != it.change.fields:
            it = replace(it, change=it.change.model_copy(update={"fields": coerced}))
        out.append(Checked(it, err, tuple(refs)))
    return out


def decide_batch(checked: Sequence[Checked], facts: Facts) -> BatchDecision:
    """Each change in order, each seeing the records as the changes before it left them."""
    batch = _Batch(facts)
    return BatchDecision([batch.decide(c) for c in checked], batch.effects())


def _reject(change: Change, error: type[OffsyncError], message: str, field_name: str | None = None) -> ItemResult:
    result = ChangeResult(
        seq=change.seq, entity=change.entity, id=change.id, status="rejected", code=error.code, message=message
    )
    return ItemResult(result, rejection=Rejection(error, message, field_name))


class _Batch:
    """The records as the batch has changed them so far, and the effects collected."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.rows: dict[RecordKey, StoredRecord] = dict(facts.records)
        self.dirty: dict[RecordKey, RecordWrite] = {}
        self.conflicts: list[ConflictEntry] = []
        self.errors: list[SyncErrorEntry] = []
        self.events: list[RecordEvent] = []
        # (batch id, record) -> (base version a change of that batch was sent with, version it produced)
        self.chain: dict[tuple[str, RecordKey], tuple[int | None, int]] = {}

    def effects(self) -> Effects:
        return Effects(list(self.dirty.values()), self.conflicts, self.errors, self.events)

    def decide(self, c: Checked) -> ItemResult:
        it, ch = c.item, c.item.change
        meta = self.facts.entities.get(ch.entity)
        actor = self.facts.actors.get(it.user_id)
        if meta is None:
            res = _reject(ch, ValidationFailed, f"unknown entity {ch.entity!r}", "entity")
        elif actor is None or not actor.enabled:
            res = _reject(ch, Forbidden, "user is unknown or disabled")
        else:
            res = self._decide_known(c, meta, actor)
        if not res.applied_as_sent:
            code = res.result.code or (res.decision.outcome.value if res.decision else "rejected")
            field_name = res.rejection.field if res.rejection else None
            self.errors.append(SyncErrorEntry(it, code, res.result.message, field_name))
        return res

    def _readable(self, ref: LookupRef, actor: Actor) -> bool:
        key = (ref.target, ref.id)
        if ref.target in ADMIN_TARGETS:
            return key in self.facts.admin_refs
        if key in self.dirty:  # written earlier in this batch
            row = self.rows[key]
            owner: Ownership | None = None if row.state.deleted else row.owner
        else:
            owner = self.facts.lookup_owners.get(key)
        meta = self.facts.entities.get(ref.target)
        if owner is None or meta is None:
            return False
        return may(actor, Operation.READ, ref.target, meta.ownership, owner)

    def _access(self, it: ChangeItem, meta: EntityMeta, actor: Actor) -> Ownership | ItemResult:
        """The record's ownership, or the rejection; a record the user may not read is reported
        as missing (no leak)."""
        ch = it.change
        row = self.rows.get((ch.entity, ch.id))
        if row is None:
            if ch.op != "create":
                return _reject(ch, NotFound, f"no {ch.entity} record {ch.id}")
            try:
                owner = ownership_for_create(
                    actor, meta.ownership, it.owner, self.facts.owner_units, self.facts.business_units
                )
            except OwnershipRefused as exc:
                return _reject(ch, ValidationFailed, exc.message, exc.field)
            if not may(actor, Operation.CREATE, ch.entity, meta.ownership, owner):
                return _reject(ch, Forbidden, f"not allowed to create {ch.entity} records for this owner")
            return owner
        if not may(actor, Operation.READ, ch.entity, meta.ownership, row.owner):
            if ch.op == "create":
                return _reject(ch, Forbidden, f"record id {ch.id} is not available")
            return _reject(ch, NotFound, f"no {ch.entity} record {ch.id}")
        op = Operation.WRITE if ch.op == "create" else OP_FOR_CHANGE[ch.op]
        if not may(actor, op, ch.entity, meta.ownership, row.owner):
            return _reject(ch, Forbidden, f"not allowed to {op.value} this {ch.entity} record")
        return row.owner

    def _decide_known(self, c: Checked, meta: EntityMeta, actor: Actor) -> ItemResult:
        it, ch = c.item, c.item.change
        key = (ch.entity, ch.id)
        owner = self._access(it, meta, actor)
        if isinstance(owner, ItemResult):
            return owner
        if c.error is not None:
            return _reject(ch, ValidationFailed, c.error.message, c.error.field)
        for ref in c.refs:
            # A lookup to a record the user cannot read is answered as if it did not exist:
            # the same 422 either way, so a write cannot probe for records (docs/conflicts.md).
            if not self._readable(ref, actor):
                return _reject(ch, ValidationFailed, f"{ref.field}: no {ref.target} with id {ref.id}", ref.field)

        policy, fallback = effective_policy(self.facts.conflict_detection, meta.conflict_policy)
        row = self.rows.get(key)
        server = row.state if row is not None else None
        # Several changes to one record in one batch were all based on what the device last
        # downloaded; each later one builds on the version the earlier one produced.
        base = ch.base_version
        chain_key = (it.batch_id, key) if it.batch_id else None
        if chain_key is not None and chain_key in self.chain and self.chain[chain_key][0] == base:
            base = self.chain[chain_key][1]
        decision = decide(server, ProposedChange(ch.op, ch.fields, base, it.user_id), policy, fallback)
        if decision.outcome is Outcome.NOT_FOUND:
            return _reject(ch, NotFound, f"no {ch.entity} record {ch.id}")
        if decision.conflict and it.strict:
            error = Conflict if ch.op == "create" else PreconditionFailed
            return _reject(ch, error, f"record is at version {server.version if server else 0}")
        assert decision.result is not None
        if decision.written:
            state = decision.result if row is not None else replace(decision.result, created_by=it.user_id)
            row = StoredRecord(ch.entity, ch.id, state, owner)
            self.rows[key] = row
            self.dirty[key] = RecordWrite(row, it.user_id, new=key not in self.facts.records)
            if chain_key is not None:
                self.chain[chain_key] = (ch.base_version, state.version)
            source: dict[str, str | None] = (
                {"device_id": it.device_id, "batch_id": it.batch_id} if it.device_id else {"api": it.user_id}
            )
            self.events.append(RecordEvent(row, source))
        if not decision.conflict:
            code = None if decision.outcome is Outcome.APPLIED else decision.outcome.value
            result = ChangeResult(
                seq=ch.seq, entity=ch.entity, id=ch.id, status="applied", version=decision.result.version, code=code
            )
            return ItemResult(result, decision)
        assert server is not None
        self.conflicts.append(
            ConflictEntry(it, decision.policy or policy, decision.outcome, server, row, decision.lost_fields)
        )
        result = ChangeResult(
            seq=ch.seq,
            entity=ch.entity,
            id=ch.id,
            status="conflict",
            version=decision.result.version,
            record=row.wire() if row else None,
            code=decision.outcome.value,
            message=(f"lost fields: {', '.join(decision.lost_fields)}" if decision.lost_fields else None),
        )
        return ItemResult(result, decision)
