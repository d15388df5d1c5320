"""Bulk import: streams NDJSON records into ``data.records`` with one set-wise upsert per chunk
(the chunk passed as arrays), writing the RecordChanged events into the outbox. All or nothing:
the first bad line aborts the import with its line number and field."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from conflict_service import directory
from conflict_service.access import Actor, Operation, Ownership, default_ownership, may
from conflict_service.applier import SCHEMA, write_outbox
from conflict_service.validation import EntityMeta, LookupRef, check_fields
from offsync_shared.errors import BadRequest, Forbidden, ValidationFailed
from offsync_shared.events.records import RecordChanged

CHUNK = 5000


@dataclass
class ImportSummary:
    imported: int = 0
    created: int = 0
    updated: int = 0


async def ndjson_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Split a byte stream into lines without holding the whole body."""
    rest = b""
    async for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


@dataclass
class _Line:
    id: str
    attributes: dict[str, Any]
    owner: Ownership
    refs: list[LookupRef]


def _parse(raw: bytes, lineno: int, meta: EntityMeta, actor: Actor) -> _Line:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(f"line {lineno}: not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("attributes", {}), dict):
        raise BadRequest(f"line {lineno}: expected an object with an 'attributes' object")
    rid = obj.get("id") or str(uuid.uuid4())
    if not isinstance(rid, str):
        raise ValidationFailed(f"line {lineno}: id must be a string", field="id")
    attrs = obj.get("attributes", {})
    err, refs = check_fields(meta, attrs, creating=True)
    if err is not None:
        raise ValidationFailed(f"line {lineno}: {err.message}", field=err.field, details={"line": lineno, "id": rid})
    owner = default_ownership(actor, meta.ownership)
    if obj.get("owner_id") is not None:
        owner_type = obj.get("owner_type", "user")
        if owner_type not in ("user", "team"):
            raise ValidationFailed(f"line {lineno}: owner_type must be user or team", field="owner_type")
        owner = Ownership(str(obj["owner_id"]), owner_type, obj.get("business_unit_id") or owner.business_unit_id)
    return _Line(rid, attrs, owner, refs)


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
    chunks = _chunks(lines, meta, actor)
    first = await anext(chunks, None)
    async with conn.transaction():
        if first is not None:
            await _flush(conn, entity, meta, actor, first, records_topic, summary)
            async for batch in chunks:
                await _flush(conn, entity, meta, actor, batch, records_topic, summary)
    return summary


async def _chunks(lines: AsyncIterator[bytes], meta: EntityMeta, actor: Actor) -> AsyncIterator[list[_Line]]:
    batch: list[_Line] = []
    lineno = 0
    async for raw in lines:
        lineno += 1
        if not raw.strip():
            continue
        batch.append(_parse(raw, lineno, meta, actor))
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
        found = await _existing(conn, refs) | await directory.existing_admin_refs(conn, refs)
        for ln in by_id.values():
            for ref in ln.refs:
                if (ref.target, ref.id) not in found and not (ref.target == entity and ref.id in by_id):
                    raise ValidationFailed(
                        f"record {ln.id}: {ref.field}: no {ref.target} with id {ref.id}", field=ref.field
                    )
    existing = {
        r["id"]: Ownership(r["owner_id"], r["owner_type"], r["business_unit_id"])
        for r in await conn.fetch(
            f"SELECT id, owner_id, owner_type, business_unit_id FROM {SCHEMA}.records WHERE entity = $1 AND id = ANY($2::text[]) ORDER BY id FOR UPDATE",
            entity,
            list(by_id),
        )
    }
    checked: set[Ownership] = set()
    for ln in by_id.values():
        current = existing.get(ln.id)
        if current is not None and not may(actor, Operation.WRITE, entity, meta.ownership, current):
            raise Forbidden(f"record {ln.id}: not allowed to overwrite it")
        if ln.owner not in checked:
            if not may(actor, Operation.CREATE, entity, meta.ownership, ln.owner):
                raise Forbidden(f"record {ln.id}: not allowed to create {entity} records for owner {ln.owner.owner_id}")
            checked.add(ln.owner)
    lines = list(by_id.values())
    # Import replaces the attributes of an existing record (owner kept) and revives a tombstone.
    rows = await conn.fetch(
        f"""INSERT INTO {SCHEMA}.records AS r (entity, id, version, owner_id, owner_type, business_unit_id, attributes,
                   field_versions, created_by, modified_by)
            SELECT $1, s.id, 1, s.owner_id, s.owner_type, s.business_unit_id, s.attributes::jsonb, s.field_versions::jsonb, $2, $2
              FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                   AS s(id, attributes, field_versions, owner_id, owner_type, business_unit_id)
            ON CONFLICT (entity, id) DO UPDATE SET version = r.version + 1, attributes = EXCLUDED.attributes,
                   deleted = false, modified_at = now(), modified_by = EXCLUDED.modified_by,
                   field_versions = r.field_versions || (SELECT coalesce(jsonb_object_agg(k, r.version + 1), '{{}}'::jsonb)
                                                          FROM jsonb_object_keys(EXCLUDED.attributes) k)
            RETURNING id, version, owner_id, owner_type, business_unit_id""",
        entity,
        actor.user_id,
        [ln.id for ln in lines],
        [orjson.dumps(ln.attributes).decode() for ln in lines],
        [orjson.dumps(dict.fromkeys(ln.attributes, 1)).decode() for ln in lines],
        [ln.owner.owner_id for ln in lines],
        [ln.owner.owner_type for ln in lines],
        [ln.owner.business_unit_id for ln in lines],
    )
    now = time.time()
    source = {"api": actor.user_id}
    events = []
    for r in rows:
        # model_construct: every field is already typed here; validating each event again would be a large share of the import.
        ev = RecordChanged.model_construct(
            deleted=False,
            entity=entity,
            id=r["id"],
            version=r["version"],
            owner_id=r["owner_id"],
            owner_type=r["owner_type"],
            business_unit_id=r["business_unit_id"],
            attributes=by_id[r["id"]].attributes,
            committed_at=now,
            source=source,
        )
        events.append((topic, ev.envelope(f"{entity}:{r['id']}")))
        if r["version"] == 1:
            summary.created += 1
        else:
            summary.updated += 1
    await write_outbox(conn, events)
    summary.imported += len(rows)


async def _existing(conn: asyncpg.Connection, refs: list[LookupRef]) -> set[tuple[str, str]]:
    refs = [r for r in refs if r.target not in directory.ADMIN_TARGETS]
    if not refs:
        return set()
    rows = await conn.fetch(
        f"""SELECT entity, id FROM {SCHEMA}.records
             WHERE (entity, id) IN (SELECT DISTINCT e, i FROM unnest($1::text[], $2::text[]) AS k(e, i)) AND NOT deleted""",
        [r.target for r in refs],
        [r.id for r in refs],
    )
    return {(r["entity"], r["id"]) for r in rows}
