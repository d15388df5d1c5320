"""Stores and reads the records themselves (``data.records``): the touched records locked for a
write, the owners of lookup targets, the decided writes (set-wise, as statements for the outbox
insert to run), one record, a page of a query and the import's upsert."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from conflict_service.batch_decisions import RecordKey, RecordWrite, StoredRecord
from conflict_service.data_outbox import SCHEMA
from conflict_service.policy import RecordState
from conflict_service.validation import query_value
from offsync_shared import outbox
from offsync_shared.domain.org import Ownership, Scope
from offsync_shared.errors import ValidationFailed

_COLUMNS = (
    "entity, id, version, owner_id, owner_type, business_unit_id, attributes, deleted, field_versions, created_by"
)


async def lock(conn: asyncpg.Connection, keys: Iterable[RecordKey]) -> dict[RecordKey, StoredRecord]:
    """The records ``keys`` name that exist (tombstones too), locked for the transaction in key
    order (so two writers touching the same records never deadlock)."""
    # Probed, and so locked, in Python's key order (every writer's): neighbouring keys share the
    # index's pages, where an IN (...) list was hashed and probed in hash order (2,000 keys of
    # 550k: -15 % time, isolated).
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM unnest($1::text[], $2::text[])
             WITH ORDINALITY AS k(e, i, n) JOIN {SCHEMA}.records r ON r.entity = k.e AND r.id = k.i
             ORDER BY k.n FOR UPDATE OF r""",
        [k[0] for k in ordered],
        [k[1] for k in ordered],
    )
    return {
        (r["entity"], r["id"]): StoredRecord(
            r["entity"],
            r["id"],
            RecordState(r["version"], r["deleted"], r["attributes"], r["field_versions"], r["created_by"]),
            Ownership(r["owner_id"], r["owner_type"], r["business_unit_id"]),
        )
        for r in rows
    }


async def live_owners(conn: asyncpg.Connection, keys: Sequence[RecordKey]) -> dict[RecordKey, Ownership]:
    """The live (not deleted) records ``keys`` name, with their ownership: what a lookup to
    them needs (its target must exist and be readable)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        f"""SELECT entity, id, owner_id, owner_type, business_unit_id FROM {SCHEMA}.records
             WHERE (entity, id) IN (SELECT DISTINCT e, i FROM unnest($1::text[], $2::text[]) AS k(e, i)) AND NOT deleted""",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["entity"], r["id"]): Ownership(r["owner_id"], r["owner_type"], r["business_unit_id"]) for r in rows}


def write(writes: Sequence[RecordWrite], *, returning: bool = False) -> list[outbox.Also]:
    """Each record's decided state, for the outbox's statement to run (outbox.insert_rows): one
    ``UPDATE`` for the records the transaction holds locked, one ``INSERT`` for those that had no
    row. A concurrent creator of a new id makes the insert fail (unique violation, after its
    commit): the caller's transaction rolls back and nothing is overwritten at the same version.
    With ``returning``, each row comes back as stored (JSON text: :func:`stored_row` reads it)."""
    out = []
    for new in (True, False):
        # In key order: each row's index descent then lands near the one before (see lock()).
        part = sorted((w for w in writes if w.new is new), key=lambda w: (w.record.entity, w.record.id))
        if part:
            sql = (_INSERT if new else _UPDATE) + (_RETURNING if returning else "")
            out.append(outbox.statement(sql, _columns(part), returns=returning))
    return out


_UNNEST = """unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[],
                    $9::text[], $10::text[], $11::text[]) AS t(e, i, v, o, ot, bu, a, d, fv, cb, mb)"""
_INSERT = f"""INSERT INTO {SCHEMA}.records AS r ({_COLUMNS}, modified_by)
    SELECT e, i, v, o, ot, bu, a::jsonb, d, fv::jsonb, cb, mb FROM {_UNNEST}"""
# created_by stays: it is the creator's, whoever writes later.
_UPDATE = f"""UPDATE {SCHEMA}.records AS r SET version = t.v, attributes = t.a::jsonb, deleted = t.d,
           field_versions = t.fv::jsonb, owner_id = t.o, owner_type = t.ot, business_unit_id = t.bu,
           modified_at = now(), modified_by = t.mb
      FROM {_UNNEST} WHERE r.entity = t.e AND r.id = t.i"""
# JSON text, as a composite would need binary codecs for every column (jsonb's is text).
_RETURNING = " RETURNING to_jsonb(r)::text"


def _columns(writes: Sequence[RecordWrite]) -> list[list[Any]]:
    recs = [w.record for w in writes]
    return [
        [r.entity for r in recs],
        [r.id for r in recs],
        [r.state.version for r in recs],
        [r.owner.owner_id for r in recs],
        [r.owner.owner_type for r in recs],
        [r.owner.business_unit_id for r in recs],
        [orjson.dumps(dict(r.state.attributes)).decode() for r in recs],
        [r.state.deleted for r in recs],
        [orjson.dumps(dict(r.state.field_versions)).decode() for r in recs],
        [r.state.created_by for r in recs],
        [w.modified_by for w in writes],
    ]


def stored_row(returned: object) -> dict[str, Any]:
    """A row :func:`write` returned, with the same values a read of it gives (timestamps as
    UTC datetimes)."""
    assert isinstance(returned, str)
    row: dict[str, Any] = orjson.loads(returned)
    for column in ("created_at", "modified_at"):
        row[column] = datetime.fromisoformat(row[column]).astimezone(UTC)
    return row


async def get(conn: asyncpg.Connection, entity: str, record_id: str) -> asyncpg.Record | None:
    """The record as stored (all columns), tombstone or not."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.records WHERE entity = $1 AND id = $2", entity, record_id
    )
    return row


# Decimals written before numbers were refused as strings (#14) may still be numeric strings;
# the regex keeps the cast from failing on anything else.
_NUMERIC = r"'^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'"


def attr_equals(spec: Mapping[str, Any], name: str, raw: str, arg: Callable[[Any], str], field: str) -> str:
    """SQL for ``attr.<name>=<raw>``, compared by the attribute's type: numbers as numbers,
    date-times as instants (stored normalized), text without regard to case (``lower()``, the
    SQL side of offsync_shared.domain.operators.fold)."""
    kind = str(spec.get("type", "string"))
    try:
        value = query_value(kind, raw)
    except ValueError as exc:
        raise ValidationFailed(f"{field} {exc}", field=field) from None
    if kind in ("int", "decimal", "choice"):
        v = arg(str(value))
        return (
            f"(CASE jsonb_typeof(attributes -> {name})"
            f" WHEN 'number' THEN (attributes ->> {name})::numeric = {v}::numeric"
            f" WHEN 'string' THEN (attributes ->> {name}) ~ {_NUMERIC} AND (attributes ->> {name})::numeric = {v}::numeric"
            f" ELSE false END)"
        )
    if kind == "bool":
        return f"attributes -> {name} = {arg('true' if value else 'false')}::jsonb"
    return f"(jsonb_typeof(attributes -> {name}) = 'string' AND lower(attributes ->> {name}) = lower({arg(value)}))"


async def query(
    conn: asyncpg.Connection,
    entity: str,
    scope: Scope,
    *,
    attributes: Mapping[str, Mapping[str, Any]],
    attr_filters: Sequence[tuple[str, str]],
    limit: int,
    after: str | None = None,
    owner_id: str | None = None,
    modified_since: Any = None,
    include_deleted: bool = False,
) -> list[asyncpg.Record]:
    """A page of ``entity``'s records within ``scope``, by id; ``attr_filters``: (name, raw
    value) equalities on attributes named in ``attributes`` (the entity's metadata)."""
    where = ["entity = $1"]
    args: list[Any] = [entity]

    def arg(v: Any) -> str:
        args.append(v)
        return f"${len(args)}"

    if not scope.everything:
        where.append(
            f"(business_unit_id = ANY({arg(list(scope.business_units))}::text[])"
            f" OR (owner_type = 'user' AND owner_id = ANY({arg(list(scope.user_owners))}::text[]))"
            f" OR (owner_type = 'team' AND owner_id = ANY({arg(list(scope.team_owners))}::text[])))"
        )
    if not include_deleted:
        where.append("NOT deleted")
    if after is not None:
        where.append(f"id > {arg(after)}")
    if owner_id is not None:
        where.append(f"owner_id = {arg(owner_id)}")
    if modified_since is not None:
        where.append(f"modified_at >= {arg(modified_since)}")
    for name, value in attr_filters:
        key = f"attr.{name}"
        if name not in attributes:
            raise ValidationFailed(f"unknown attribute {name!r}", field=key)
        where.append(attr_equals(attributes[name], arg(name), value, arg, key))
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.records WHERE {' AND '.join(where)} ORDER BY id LIMIT {arg(limit)}", *args
    )
    return rows


async def import_upsert(
    conn: asyncpg.Connection,
    entity: str,
    user_id: str,
    records: Sequence[tuple[str, Mapping[str, Any]]],
    owners: Sequence[Ownership],
) -> list[asyncpg.Record]:
    """An import chunk's (id, attributes) in one statement: a new record at version 1 with
    ``owners``' ownership; an existing one gets its attributes replaced (owner kept) and a
    tombstone is revived. Returns each row's id, version and ownership."""
    rows: list[asyncpg.Record] = await conn.fetch(
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
        user_id,
        [rid for rid, _ in records],
        [orjson.dumps(attrs).decode() for _, attrs in records],
        [orjson.dumps(dict.fromkeys(attrs, 1)).decode() for _, attrs in records],
        [o.owner_id for o in owners],
        [o.owner_type for o in owners],
        [o.business_unit_id for o in owners],
    )
    return rows
