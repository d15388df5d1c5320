"""Bulk import: streams NDJSON records into ``data.records`` with one set-wise upsert per chunk
(the chunk passed as arrays), writing the RecordsChanged events into the outbox. All or nothing:
the first bad line aborts the import with its line number and field."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from conflict_service import directory, record_store
from conflict_service.applier import record_refs
from conflict_service.data_outbox import write_outbox
from conflict_service.validation import EntityMeta, LookupRef, check_fields
from offsync_shared.domain.org import (
    Actor,
    Operation,
    OwnerRequest,
    Ownership,
    OwnershipRefused,
    may,
    ownership_for_create,
)
from offsync_shared.errors import BadRequest, Forbidden, PayloadTooLarge, ValidationFailed
from offsync_shared.events import records as record_events
from offsync_shared.protocol import MAX_ID_LEN
from offsync_shared.protocol import has_nul as _has_nul

CHUNK = 5000
MAX_LINE_BYTES = 4 * 1024 * 1024  # one record's line; the records API takes 2 MiB per record


@dataclass
class ImportSummary:
    imported: int = 0
    created: int = 0
    updated: int = 0


async def ndjson_lines(chunks: AsyncIterator[bytes], max_line: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
    """Split a byte stream into lines without holding the whole body, in time linear in its
    size: the unfinished line is kept as a list of pieces and joined once, when its newline
    comes (appending to one bytes object copied it whole on every chunk: a 60 MB line took
    17-20 s of CPU). A line longer than ``max_line`` bytes is refused as soon as it is."""
    pieces: list[bytes] = []
    pending = 0  # bytes in pieces
    lineno = 0
    async for chunk in chunks:
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            lineno += 1
            if pending + nl - start > max_line:
                raise PayloadTooLarge(f"line {lineno}: longer than {max_line} bytes", field="body")
            if pieces:
                pieces.append(chunk[start:nl])
                yield b"".join(pieces)
                pieces, pending = [], 0
            else:
                yield chunk[start:nl]
            start = nl + 1
        if start < len(chunk):
            pieces.append(chunk[start:])
            pending += len(chunk) - start
            if pending > max_line:
                raise PayloadTooLarge(f"line {lineno + 1}: longer than {max_line} bytes", field="body")
    if pieces:
        yield b"".join(pieces)


@dataclass
class _Line:
    lineno: int
    id: str
    attributes: dict[str, Any]
    request: OwnerRequest | None
    refs: list[LookupRef]


def _parse(raw: bytes, lineno: int, meta: EntityMeta) -> _Line:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"line {lineno}: not JSON") from None
    # JSON carries NUL only as \u0000: one scan of the line; PostgreSQL text cannot hold it.
    if b"\\u0000" in raw and _has_nul(obj):
        raise BadRequest(f"line {lineno}: text must not contain NUL characters", details={"line": lineno})
    if not isinstance(obj, dict) or not isinstance(obj.get("attributes", {}), dict):
        raise BadRequest(f"line {lineno}: expected an object with an 'attributes' object")
    rid = obj.get("id") or str(uuid.uuid4())
    if not isinstance(rid, str) or len(rid) > MAX_ID_LEN:
        raise ValidationFailed(f"line {lineno}: id must be a string of at most {MAX_ID_LEN} characters", field="id")
    err, refs, attrs = check_fields(meta, obj.get("attributes", {}), creating=True)
    if err is not None:
        raise ValidationFailed(f"line {lineno}: {err.message}", field=err.field, details={"line": lineno, "id": rid})
    request = None
    owner_id, unit = obj.get("owner_id"), obj.get("business_unit_id")
    if owner_id is not None or unit is not None:
        owner_type = obj.get("owner_type", "user")
        if owner_type not in ("user", "team"):
            raise ValidationFailed(f"line {lineno}: owner_type must be user or team", field="owner_type")
        if not isinstance(owner_id, (str, type(None))) or not isinstance(unit, (str, type(None))):
            raise ValidationFailed(f"line {lineno}: owner_id and business_unit_id are strings", field="owner_id")
        request = OwnerRequest(owner_id, owner_type, unit)
    return _Line(lineno, rid, attrs, request, refs)


async def _owners(conn: asyncpg.Connection, actor: Actor, meta: EntityMeta, lines: list[_Line]) -> list[Ownership]:
    """Each line's ownership (the owner's business unit; named owners and units must exist)."""
    requests = [ln.request for ln in lines if ln.request is not None]
    units = await directory.owner_units(conn, [(r.owner_type, r.owner_id) for r in requests if r.owner_id is not None])
    bus = await directory.existing_business_units(conn, [r.business_unit_id for r in requests if r.business_unit_id])
    out = []
    for ln in lines:
        try:
            out.append(ownership_for_create(actor, meta.ownership, ln.request, units, bus))
        except OwnershipRefused as exc:
            raise ValidationFailed(
                f"line {ln.lineno}: {exc.message}", field=exc.field, details={"line": ln.lineno, "id": ln.id}
            ) from None
    return out


async def import_records(
    conn: asyncpg.Connection,
    entity: str,
    meta: EntityMeta,
    actor: Actor,
    lines: AsyncIterator[bytes],
    records_topic: str,
) -> ImportSummary:
    """Opens its own transaction; raises an OffsyncError (nothing written) on the first bad line.
    The transaction starts once the first chunk is received and checked, so an import of up to
    a chunk holds it (and its row locks) only while writing, not while the client uploads."""
    summary = ImportSummary()
    chunks = _chunks(lines, meta)
    first = await anext(chunks, None)
    async with conn.transaction():
        if first is not None:
            await _flush(conn, entity, meta, actor, first, records_topic, summary)
            async for batch in chunks:
                await _flush(conn, entity, meta, actor, batch, records_topic, summary)
    return summary


async def _chunks(lines: AsyncIterator[bytes], meta: EntityMeta) -> AsyncIterator[list[_Line]]:
    batch: list[_Line] = []
    lineno = 0
    async for raw in lines:
        lineno += 1
        if not raw.strip():
            continue
        batch.append(_parse(raw, lineno, meta))
        if len(batch) >= CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


async def _flush(
    conn: asyncpg.Connection,
    entity: str,
    meta: EntityMeta,
    actor: Actor,
    batch: list[_Line],
    topic: str,
    summary: ImportSummary,
) -> None:
    by_id = {ln.id: ln for ln in batch}  # a later line for the same id replaces an earlier one
    refs = [r for ln in by_id.values() for r in ln.refs]
    if refs:
        records = await record_store.live_owners(conn, record_refs(refs))
        admin = await directory.existing_admin_refs(conn, refs)
        metas = await directory.entities(conn, {r.target for r in refs})
        for ln in by_id.values():
            for ref in ln.refs:
                key = (ref.target, ref.id)
                owner, target = records.get(key), metas.get(ref.target)
                # Unreadable counts as missing: the same answer, so an import cannot probe for records.
                readable = (
                    owner is not None
                    and target is not None
                    and may(actor, Operation.READ, ref.target, target.ownership, owner)
                )
                if not (key in admin or readable or (ref.target == entity and ref.id in by_id)):
                    raise ValidationFailed(
                        f"record {ln.id}: {ref.field}: no {ref.target} with id {ref.id}", field=ref.field
                    )
    existing = await record_store.lock(conn, [(entity, rid) for rid in by_id])
    lines = list(by_id.values())
    owners = await _owners(conn, actor, meta, lines)
    checked: set[Ownership] = set()
    for ln, owner in zip(lines, owners, strict=True):
        current = existing.get((entity, ln.id))
        if current is not None and not may(actor, Operation.WRITE, entity, meta.ownership, current.owner):
            raise Forbidden(f"record {ln.id}: not allowed to overwrite it")
        if owner not in checked:
            if not may(actor, Operation.CREATE, entity, meta.ownership, owner):
                raise Forbidden(f"record {ln.id}: not allowed to create {entity} records for owner {owner.owner_id}")
            checked.add(owner)
    rows = await record_store.import_upsert(
        conn, entity, actor.user_id, [(ln.id, ln.attributes) for ln in lines], owners
    )
    now = time.time()
    source = {"api": actor.user_id}
    payloads = []
    for r in rows:
        payloads.append(
            record_events.change_payload(
                entity,
                r["id"],
                r["version"],
                False,
                r["owner_id"],
                r["owner_type"],
                r["business_unit_id"],
                by_id[r["id"]].attributes,
                now,
                source,
            )
        )
        if r["version"] == 1:
            summary.created += 1
        else:
            summary.updated += 1
    occurred_at = datetime.fromtimestamp(now, UTC).isoformat()
    events = [(topic, env) for env in record_events.envelopes(payloads, occurred_at)]
    await write_outbox(conn, events, [(entity, r["id"]) for r in rows])
    summary.imported += len(rows)
