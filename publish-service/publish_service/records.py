"""Keeps buckets current as records change: for a batch of RecordChanged events, writes exactly
the put/remove ops that move every affected bucket from its old content to its new one.

The work is state-based: each touched record is brought to its newest known state (the event or
data.records, whichever is newer; never older than what the index holds) and its bucket
membership is recomputed and diffed against the ops it has. Redelivered or reordered events
therefore produce no ops. Derived (related-record) buckets whose inputs moved are recomputed
set-wise in SQL and diffed the same way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

import asyncpg

from offsync_shared import heap
from offsync_shared.events.records import RecordChanged
from publish_service import bucket_writes
from publish_service.registry import Registry
from publish_service.rules.buckets import BucketDef, depth_of, param_rows, sql_family_select
from publish_service.rules.conditions import sql_literal
from publish_service.rules.model import Record

# Probed in key order (the caller sorts): neighbouring keys share index pages, where an IN (...)
# list is hashed and probed in hash order.
_KEYS = "unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(e, i, n) JOIN {table} ON entity = k.e AND {id} = k.i"
_REC_COLS = (
    "entity, {id} AS id, version, owner_id, owner_type, business_unit_id, attributes, deleted, created_at, modified_at"
)
# The touched records as data.records has them and as the index has them, and the registry's
# generation (in ``version``), in one round trip: read under the ops lock, like the index.
_READ_STATES = (
    f"(SELECT 'data' AS src, {_REC_COLS.format(id='id')} FROM {_KEYS.format(table='data.records', id='id')} ORDER BY k.n) "
    f"UNION ALL (SELECT 'index', {_REC_COLS.format(id='record_id')} FROM {_KEYS.format(table='sync.record_index', id='record_id')} ORDER BY k.n) "
    "UNION ALL SELECT 'generation', '', '', generation, NULL, NULL, NULL, NULL, false, NULL, NULL FROM sync.registry_generation"
)


def _record(row: asyncpg.Record) -> Record:
    return Record(
        row["entity"],
        row["id"],
        row["version"],
        row["owner_id"],
        row["owner_type"],
        row["business_unit_id"],
        row["attributes"] or {},
        row["deleted"],
        row["created_at"],
        row["modified_at"],
    )


def _from_event(ev: RecordChanged) -> Record:
    return Record(
        ev.entity, ev.id, ev.version, ev.owner_id, ev.owner_type, ev.business_unit_id, ev.attributes, ev.deleted
    )


@dataclass
class BatchResult:
    ops: int = 0
    advanced: dict[str, int] | None = None
    skipped_stale: int = 0
    # The version each record's buckets are now at (the records hint's apply_keys only).
    versions: dict[tuple[str, str], int] | None = None


class RecordApplier:
    def __init__(self, notify_topic: str, *, hint: bool = False) -> None:
        self.notify_topic = notify_topic
        self.hint = hint  # send ops hints (bucket_writes.notify)
        self.registry = Registry([], generation=-1)

    async def _registry(self, conn: asyncpg.Connection, gen: int) -> Registry:
        if gen != self.registry.generation:
            self.registry = Registry(await bucket_writes.load_defs(conn), gen)
            heap.freeze_long_lived()  # the registry lives until the next publish: keep it out of every collection
        return self.registry

    async def load_registry(self, conn: asyncpg.Connection) -> None:
        """Bring the bucket registry to the committed generation now (after a publish this
        process made), so the first change after it does not load it on its path."""
        await self._registry(conn, await conn.fetchval("SELECT generation FROM sync.registry_generation"))

    async def apply(
        self, conn: asyncpg.Connection, events: Sequence[RecordChanged], *, locked: bool = False
    ) -> BatchResult:
        """Call inside a transaction; ``locked``: it holds the ops lock already."""
        newest: dict[tuple[str, str], Record | None] = {}
        for ev in events:
            k = (ev.entity, ev.id)
            seen = newest.get(k)
            if seen is None or seen.version < ev.version:
                newest[k] = _from_event(ev)
        return await self._apply(conn, newest, locked)

    async def apply_keys(
        self, conn: asyncpg.Connection, keys: Iterable[tuple[str, str]], *, locked: bool = False
    ) -> BatchResult:
        """A records hint (offsync_shared.records_hint): the named records as ``data.records``
        has them now; one that is not there is left to its event. Call inside a transaction;
        ``locked``: it holds the ops lock already (bucket_writes.ops_transaction)."""
        return await self._apply(conn, dict.fromkeys(keys), locked)

    async def _apply(
        self, conn: asyncpg.Connection, known: dict[tuple[str, str], Record | None], locked: bool
    ) -> BatchResult:
        if not locked:
            await bucket_writes.lock_ops(conn)
        keys = sorted(known)
        ents, ids = [k[0] for k in keys], [k[1] for k in keys]
        indexed: dict[tuple[str, str], Record] = {}
        rows = await conn.fetch(_READ_STATES, ents, ids)
        reg = await self._registry(conn, next(r["version"] for r in rows if r["src"] == "generation"))
        for row in rows:
            if row["src"] == "generation":
                continue
            r = _record(row)
            k = (r.entity, r.id)
            if row["src"] == "index":
                indexed[k] = r
            else:
                seen = known[k]
                if seen is None or r.version >= seen.version:  # the row also carries createdon/modifiedon
                    known[k] = r
        newest = {k: r for k, r in known.items() if r is not None}
        result = BatchResult()
        current: list[Record] = []
        old_state: dict[tuple[str, str], Record | None] = {}
        ops: list[bucket_writes.Op] = []
        to_index: list[Record] = []
        for k, rec in newest.items():
            before = indexed.get(k)
            if before is not None and before.version > rec.version:
                result.skipped_stale += 1
                rec = before  # the index is ahead: converge to it (a no-op diff unless buckets moved)
            elif before is None or before.version < rec.version:
                to_index.append(rec)
            old_state[k] = before
            current.append(rec)
            now = reg.base_buckets_of(rec)
            # Invariant: a record's base-bucket puts are exactly the registry's buckets for its
            # indexed state, at the indexed version (both only change together, under the lock).
            mine = {b: before.version for b in reg.base_buckets_of(before)} if before is not None else {}
            for b in now:
                if mine.get(b) != rec.version:
                    ops.append(bucket_writes.Op(b, rec.entity, rec.id, "put", rec.version, mine.get(b)))
            for b, v in mine.items():
                if b not in now:
                    ops.append(bucket_writes.Op(b, rec.entity, rec.id, "remove", v, v))
        # The bucket rows' checksums, counts and newest ops are written with the notification.
        moves = bucket_writes.BucketMoves()
        advanced = await bucket_writes.write_ops(conn, ops, index=to_index, moves=moves)
        result.ops = len(ops)
        if reg.children:
            d_ops, d_adv = await self._refresh_derived(conn, reg, current, old_state, ops, moves)
            result.ops += d_ops
            for b, op_id in d_adv.items():
                advanced[b] = max(advanced.get(b, 0), op_id)
        result.advanced = advanced
        result.versions = {(r.entity, r.id): r.version for r in current}
        await bucket_writes.notify(conn, self.notify_topic, advanced, hint=self.hint, moves=moves)
        return result

    async def _refresh_derived(
        self,
        conn: asyncpg.Connection,
        reg: Registry,
        current: list[Record],
        old_state: dict[tuple[str, str], Record | None],
        base_ops: list[bucket_writes.Op],
        moves: bucket_writes.BucketMoves,
    ) -> tuple[int, dict[str, int]]:
        """Re-decide derived-bucket membership, depth by depth, for the records whose membership
        can have moved: touched records and records related to those that entered, left or
        changed in the parent bucket this batch."""
        delta = _Delta()
        delta.note(base_ops)
        # A touched record can only be in, or enter, a derived bucket whose parent holds a record it
        # relates to (before or after the change), or whose parent moved in this batch.
        todo = await self._related_to_touched(conn, reg, current, old_state)
        for b in list(delta.changed):
            todo.update(c.id for c in reg.children.get(b, ()))
        total, advanced = 0, {}
        done: set[str] = set()
        while todo:
            depth = min(depth_of(reg.defs[b]) for b in todo)
            level = sorted((reg.defs[b] for b in todo if depth_of(reg.defs[b]) == depth), key=lambda d: d.family)
            todo -= {d.id for d in level}
            ops: list[bucket_writes.Op] = []
            for _, fam_iter in groupby(level, key=lambda d: d.family):
                fam = list(fam_iter)
                cands = await _candidates(conn, fam, current, old_state, delta)
                if cands:
                    ops += await _diff_family(conn, fam, sorted(cands))
            adv = await bucket_writes.write_ops(conn, ops, moves=moves)
            total += len(ops)
            advanced.update(adv)
            done.update(d.id for d in level)
            delta.note(ops)
            for b in adv:
                todo.update(c.id for c in reg.children.get(b, ()) if c.id not in done)
        return total, advanced

    async def _related_to_touched(
        self,
        conn: asyncpg.Connection,
        reg: Registry,
        current: list[Record],
        old_state: dict[tuple[str, str], Record | None],
    ) -> set[str]:
        """Derived buckets whose parent holds a record a touched record relates to (so the touched
        record may enter them although it was in none of them)."""
        by_rel: dict[tuple[str, str, str, str], list[BucketDef]] = {}
        touched_entities = {r.entity for r in current}
        for entity in touched_entities:
            for d in reg.derived_by_entity.get(entity, ()):
                by_rel.setdefault((d.entity, d.filter["from"], d.filter["attribute"], d.filter["side"]), []).append(d)
        keep: set[str] = set()
        for (entity, parent_entity, attr, side), ds in by_rel.items():
            touched = [r for r in current if r.entity == entity]
            parents = sorted({d.params["parent"] for d in ds})
            pe, a = sql_literal(parent_entity), sql_literal(attr)
            if side == "self":
                targets = sorted(
                    {
                        t
                        for r in touched
                        for x in (r, old_state.get((r.entity, r.id)))
                        if x is not None
                        for t in [x.attributes.get(attr)]
                        if isinstance(t, str)
                    }
                )
                if not targets:
                    continue
                rows = await conn.fetch(
                    f"SELECT DISTINCT bucket_id FROM sync.bucket_ops WHERE entity = {pe} AND record_id = ANY($1::text[]) "
                    "AND op = 'put' AND bucket_id = ANY($2::text[])",
                    targets,
                    parents,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT DISTINCT p.bucket_id FROM sync.record_index f JOIN sync.bucket_ops p "
                    f"ON p.entity = {pe} AND p.record_id = f.record_id AND p.op = 'put' "
                    f"WHERE f.entity = {pe} AND (f.attributes ->> {a}) = ANY($1::text[]) AND p.bucket_id = ANY($2::text[])",
                    [r.id for r in touched],
                    parents,
                )
            hit = {r["bucket_id"] for r in rows}
            keep.update(d.id for d in ds if d.params["parent"] in hit)
        return keep


class _Delta:
    """The parent-side moves of a batch, per bucket: which records got any op (``changed``) and
    which entered or left (``members``). A side-"self" child (its own lookup names the parent)
    depends only on which parents are in the bucket, so a parent's new version (most record
    edits) re-decides none of its children; a side-"related" child follows the parent's lookup
    attribute, which any new version may have changed."""

    def __init__(self) -> None:
        self.changed: defaultdict[str, set[str]] = defaultdict(set)
        self.members: defaultdict[str, set[str]] = defaultdict(set)

    def note(self, ops: Iterable[bucket_writes.Op]) -> None:
        for o in ops:
            self.changed[o.bucket_id].add(o.record_id)
            if o.op == "remove" or o.old_version is None:
                self.members[o.bucket_id].add(o.record_id)

    def moved(self, fam: list[BucketDef]) -> list[str]:
        source = self.members if fam[0].filter["side"] == "self" else self.changed
        return sorted({rid for d in fam for rid in source.get(d.params["parent"], ())})


async def _candidates(
    conn: asyncpg.Connection,
    fam: list[BucketDef],
    current: list[Record],
    old_state: dict[tuple[str, str], Record | None],
    delta: _Delta,
) -> set[str]:
    """Record ids of the family's entity whose membership may have moved this batch."""
    sample = fam[0]
    entity, parent_entity, attr = sample.entity, sample.filter["from"], sample.filter["attribute"]
    cands = {r.id for r in current if r.entity == entity}
    moved = delta.moved(fam)
    if not moved:
        return cands
    e, pe, a = sql_literal(entity), sql_literal(parent_entity), sql_literal(attr)
    if sample.filter["side"] == "self":
        rows = await conn.fetch(
            f"SELECT record_id AS v FROM sync.record_index WHERE entity = {e} AND (attributes ->> {a}) = ANY($1::text[])",
            moved,
        )
    else:
        rows = await conn.fetch(
            f"SELECT attributes ->> {a} AS v FROM sync.record_index WHERE entity = {pe} AND record_id = ANY($1::text[])",
            moved,
        )
        for rid in moved:
            before = old_state.get((parent_entity, rid))
            if before is not None and isinstance(before.attributes.get(attr), str):
                cands.add(before.attributes[attr])
    cands.update(r["v"] for r in rows if r["v"] is not None)
    return cands


async def _diff_family(conn: asyncpg.Connection, fam: list[BucketDef], cands: list[str]) -> list[bucket_writes.Op]:
    rows = await conn.fetch(
        f"""
        WITH want AS ({sql_family_select(fam[0], "$1", restrict="$3")}),
             -- every key column given: exact primary-key probes (bucket × candidate)
             have AS (SELECT bucket_id, entity, record_id, version FROM sync.bucket_ops
                      WHERE bucket_id = ANY($2::text[]) AND entity = {sql_literal(fam[0].entity)} AND op = 'put'
                        AND record_id = ANY($3::text[]))
        SELECT COALESCE(w.bucket_id, h.bucket_id) AS bucket_id, COALESCE(w.entity, h.entity) AS entity,
               COALESCE(w.record_id, h.record_id) AS record_id, w.version AS new_v, h.version AS old_v
        FROM want w FULL JOIN have h ON h.bucket_id = w.bucket_id AND h.entity = w.entity AND h.record_id = w.record_id
        WHERE w.version IS DISTINCT FROM h.version
        """,
        param_rows(fam),
        [d.id for d in fam],
        cands,
    )
    return [
        bucket_writes.Op(
            r["bucket_id"],
            r["entity"],
            r["record_id"],
            "put" if r["new_v"] is not None else "remove",
            r["new_v"] if r["new_v"] is not None else r["old_v"],
            r["old_v"],
        )
        for r in rows
    ]


def latency_ms(events: Iterable[RecordChanged]) -> list[float]:
    now = time.time()
    return [(now - e.committed_at) * 1000 for e in events]
