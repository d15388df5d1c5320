"""The records REST API: server-side creates, reads, updates, deletes, batches, queries and
NDJSON imports of records, each under the caller's security roles."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from conflict_service import directory, record_store, record_writes
from conflict_service.batch_decisions import ChangeItem
from conflict_service.bulk_import import import_records, ndjson_lines
from conflict_service.context import Ctx, CtxDep
from conflict_service.validation import EntityMeta
from offsync_shared.domain.org import Operation, OwnerRequest, Ownership, may, read_scope
from offsync_shared.errors import BadRequest, NotFound, ValidationFailed
from offsync_shared.events.device_batches import Change
from offsync_shared.query_types import Instant

router = APIRouter(prefix="/v1/records", tags=["records"])

MAX_PAGE = 500
MAX_BATCH = 1000  # changes per batch request: one transaction, bounded in size and lock count
MAX_VERSION = 2**63 - 1  # data.records.version is a bigint column


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, description="Record id; a UUID is generated when omitted.", pattern=r"^[^\x00]+$")
    attributes: dict[str, Any] = Field(default_factory=dict)
    owner_id: str | None = Field(None, description="Owning user or team (must exist); default the caller.")
    owner_type: Literal["user", "team"] = "user"
    business_unit_id: str | None = Field(
        None,
        description="Owning business unit: always the owner's (a different one is refused); for "
        "business-owned entities the owner itself (must exist). Default: the owner's / the caller's.",
    )


class RecordPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, Any]


class BatchChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    op: Literal["create", "update", "delete"]
    id: str | None = Field(
        None,
        description="Record id (required for update and delete; generated for a create without one).",
        pattern=r"^[^\x00]+$",
    )
    attributes: dict[str, Any] = Field(default_factory=dict)
    if_match: int | None = Field(
        None, ge=0, le=MAX_VERSION, description="Expected current version (update, delete), as If-Match."
    )
    owner_id: str | None = Field(None, description="create: owning user or team (must exist); default the caller.")
    owner_type: Literal["user", "team"] = "user"
    business_unit_id: str | None = Field(
        None, description="create: owning business unit, always the owner's (as RecordIn.business_unit_id)."
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    changes: list[BatchChangeIn] = Field(min_length=1, max_length=MAX_BATCH)


class RecordOut(BaseModel):
    entity: str
    id: str
    version: int = Field(description="Increases by one with every write; the ETag and If-Match value.")
    deleted: bool = Field(description="A tombstone (only listed with include_deleted).")
    owner_id: str | None
    owner_type: Literal["user", "team"] | None
    business_unit_id: str | None
    attributes: dict[str, Any]
    created_at: str = Field(description="ISO 8601 instant.")
    modified_at: str = Field(description="ISO 8601 instant of the last write's commit.")
    created_by: str | None
    modified_by: str | None


class RecordPage(BaseModel):
    items: list[RecordOut]
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last page.")


class BatchItemOut(BaseModel):
    op: Literal["create", "update", "delete"]
    id: str = Field(description="The record's id (generated for a create that named none).")
    version: int | None = Field(description="The record's version after the change.")
    deleted: bool


class BatchOut(BaseModel):
    modified_at: str = Field(description="The batch's one commit time (ISO 8601): every written row's modified_at.")
    items: list[BatchItemOut] = Field(description="One per change, in the order sent.")


class ImportOut(BaseModel):
    imported: int = Field(description="Records written (a later line for the same id replaces an earlier one).")
    created: int
    updated: int


def _record_out(row: Mapping[str, Any]) -> RecordOut:
    return RecordOut(
        entity=row["entity"],
        id=row["id"],
        version=row["version"],
        deleted=row["deleted"],
        owner_id=row["owner_id"],
        owner_type=row["owner_type"],
        business_unit_id=row["business_unit_id"],
        attributes=row["attributes"],
        created_at=row["created_at"].isoformat(),
        modified_at=row["modified_at"].isoformat(),
        created_by=row["created_by"],
        modified_by=row["modified_by"],
    )


def _etag(response: Response, row: Mapping[str, Any]) -> RecordOut:
    response.headers["ETag"] = f'"{row["version"]}"'
    return _record_out(row)


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    try:
        version = int(if_match.strip().strip("W/").strip('"'))
    except ValueError:
        raise BadRequest("If-Match must be a record version", field="If-Match") from None
    if not 0 <= version <= MAX_VERSION:  # beyond the column's range (no record has it) -> 400, not a 500
        raise BadRequest("If-Match must be a record version", field="If-Match")
    return version


async def _entity_meta(conn: asyncpg.Connection, entity: str) -> EntityMeta:
    meta = (await directory.entities(conn, [entity])).get(entity)
    if meta is None:
        raise NotFound(f"no entity {entity!r}", field="entity")
    return meta


def _batch_item(ctx: Ctx, entity: str, seq: int, ch: BatchChangeIn) -> ChangeItem:
    if ch.op != "create" and ch.id is None:
        raise ValidationFailed(f"changes[{seq}]: {ch.op} needs the record id", field=f"changes.{seq}.id")
    owner = OwnerRequest(ch.owner_id, ch.owner_type, ch.business_unit_id) if ch.op == "create" else None
    change = Change(
        seq=seq,
        op=ch.op,
        entity=entity,
        id=ch.id or str(uuid.uuid4()),
        base_version=ch.if_match if ch.op != "create" else None,
        fields=ch.attributes if ch.op != "delete" else {},
    )
    return ChangeItem(ctx.actor.user_id, change, strict=True, owner=owner)


@router.post(
    "/{entity}",
    status_code=201,
    response_model=RecordOut,
    summary="Create a record",
    description="Create a record of `entity` owned by the caller (or the owner named), validated against the "
    "entity's metadata; it reaches devices as a RecordChanged event. 409 if the id is taken. The ETag header "
    "carries the version.",
)
async def create_record(entity: str, body: RecordIn, ctx: CtxDep, response: Response) -> RecordOut:
    owner = OwnerRequest(body.owner_id, body.owner_type, body.business_unit_id)
    change = Change(seq=0, op="create", entity=entity, id=body.id or str(uuid.uuid4()), fields=body.attributes)
    row = await record_writes.write_one(ctx, ChangeItem(ctx.actor.user_id, change, strict=True, owner=owner))
    return _etag(response, row)


@router.get(
    "/{entity}/{record_id}",
    response_model=RecordOut,
    summary="Read a record",
    description="One live record the caller may read; 404 alike for a missing, deleted or unreadable record "
    "(no leak). The ETag header carries the version.",
)
async def get_record(entity: str, record_id: str, ctx: CtxDep, response: Response) -> RecordOut:
    async with ctx.read() as conn:
        meta = await _entity_meta(conn, entity)
        row = await record_store.get(conn, entity, record_id)
    if row is None or row["deleted"]:
        raise NotFound(f"no {entity} record {record_id}")
    owner = Ownership(row["owner_id"], row["owner_type"], row["business_unit_id"])
    if not may(ctx.actor, Operation.READ, entity, meta.ownership, owner):
        raise NotFound(f"no {entity} record {record_id}")
    return _etag(response, row)


@router.patch(
    "/{entity}/{record_id}",
    response_model=RecordOut,
    summary="Update a record's attributes",
    description="Set the attributes sent (others are kept). With If-Match, a record at another version is "
    "refused (412); without, the write applies to the current version. Returns the record as stored.",
)
async def update_record(
    entity: str,
    record_id: str,
    body: RecordPatch,
    ctx: CtxDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> RecordOut:
    change = Change(
        seq=0, op="update", entity=entity, id=record_id, base_version=_version(if_match), fields=body.attributes
    )
    row = await record_writes.write_one(ctx, ChangeItem(ctx.actor.user_id, change, strict=True))
    return _etag(response, row)


@router.delete(
    "/{entity}/{record_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a record",
    description="Leave a tombstone devices sync as a delete. With If-Match, a record at another version is "
    "refused (412). No body.",
)
async def delete_record(
    entity: str, record_id: str, ctx: CtxDep, if_match: Annotated[str | None, Header()] = None
) -> Response:
    change = Change(seq=0, op="delete", entity=entity, id=record_id, base_version=_version(if_match))
    await record_writes.write_one(ctx, ChangeItem(ctx.actor.user_id, change, strict=True))
    return Response(status_code=204)


@router.post(
    "/{entity}/batch",
    response_model=BatchOut,
    summary="Write a batch of changes in one transaction",
    description=f"Up to {MAX_BATCH} creates, updates and deletes of `entity` in one transaction: each authorized, "
    "validated and versioned as its single-record call (`if_match` as If-Match), each emitting its "
    "RecordChanged. All or nothing: the first refused change fails the batch with its 4xx, naming it.",
)
async def batch_write(entity: str, body: BatchIn, ctx: CtxDep) -> BatchOut:
    items = [_batch_item(ctx, entity, i, ch) for i, ch in enumerate(body.changes)]
    done = await record_writes.write_batch(ctx, items)
    return BatchOut(
        modified_at=done.modified_at.isoformat(),
        items=[
            BatchItemOut(op=it.change.op, id=it.change.id, version=res.result.version, deleted=it.change.op == "delete")
            for it, res in zip(items, done.results, strict=True)
        ],
    )


@router.get(
    "/{entity}",
    response_model=RecordPage,
    summary="Query records",
    description="Records of `entity` the caller may read, by id. `attr.<name>=<value>` filters on equality, "
    "compared by the attribute's type (numbers as numbers, text without regard to case). Page with `after` "
    "= the previous page's `next_after`.",
)
async def query_records(
    entity: str,
    request: Request,
    ctx: CtxDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: Annotated[str | None, Query(description="Page cursor: the last id of the previous page.")] = None,
    owner_id: str | None = None,
    modified_since: Instant | None = None,
    include_deleted: bool = False,
) -> RecordPage:
    async with ctx.read() as conn:
        meta = await _entity_meta(conn, entity)
        scope = read_scope(ctx.actor, entity, meta.ownership)
        if scope.nothing:
            return RecordPage(items=[], next_after=None)
        rows = await record_store.query(
            conn,
            entity,
            scope,
            attributes=meta.attributes,
            attr_filters=[(k[5:], v) for k, v in request.query_params.items() if k.startswith("attr.")],
            limit=limit,
            after=after,
            owner_id=owner_id,
            modified_since=modified_since,
            include_deleted=include_deleted,
        )
    items = [_record_out(r) for r in rows]
    return RecordPage(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.post(
    "/{entity}/import",
    response_model=ImportOut,
    summary="Import records from NDJSON",
    description='NDJSON body, streamed: one `{"id"?, "attributes", "owner_id"?, "owner_type"?, '
    '"business_unit_id"?}` per line. An existing record gets its attributes replaced (owner kept). '
    "All or nothing: the first bad line fails the import with its line number and field.",
)
async def bulk_import(entity: str, request: Request, ctx: CtxDep) -> ImportOut:
    async with ctx.publishing() as conn:  # import_records opens the transaction
        meta = await _entity_meta(conn, entity)
        summary = await import_records(
            conn, entity, meta, ctx.actor, ndjson_lines(request.stream()), ctx.topics.records
        )
    return ImportOut(imported=summary.imported, created=summary.created, updated=summary.updated)
