"""The records REST API (server-side writes and reads under the caller's security roles) and the
admin endpoints over the conflicts log and the sync error ledger."""

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from conflict_service import directory
from conflict_service.applier import SCHEMA, Applier, ChangeItem, ItemResult, Topics, write_outbox
from conflict_service.bulk_import import import_records, ndjson_lines
from conflict_service.validation import EntityMeta, query_value
from offsync_shared import auth, outbox
from offsync_shared.domain.org import Actor, Operation, OwnerRequest, Ownership, may, read_scope
from offsync_shared.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    OffsyncError,
    Unauthenticated,
    ValidationFailed,
)
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.device_batches import Change
from offsync_shared.query_types import PG_BIGINT_MAX, IdCursor, Instant
from offsync_shared.settings import CommonSettings

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


class ReapplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(False, description="Apply over the current server version (no conflict check).")


class DismissedOut(BaseModel):
    id: int = Field(description="The sync error's id")
    status: Literal["dismissed"] = Field("dismissed", description="Its status now")


def _wire(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "entity": row["entity"],
        "id": row["id"],
        "version": row["version"],
        "deleted": row["deleted"],
        "owner_id": row["owner_id"],
        "owner_type": row["owner_type"],
        "business_unit_id": row["business_unit_id"],
        "attributes": row["attributes"],
        "created_at": row["created_at"].isoformat(),
        "modified_at": row["modified_at"].isoformat(),
        "created_by": row["created_by"],
        "modified_by": row["modified_by"],
    }


def _raise_for(res: ItemResult, index: int | None = None) -> None:
    """A rejected change as its 4xx; in a batch, the message and details name the change."""
    r = res.result
    if r.status != "rejected":
        return
    cls: type[OffsyncError] = res.error or BadRequest
    message = r.message or r.code or "rejected"
    if index is None:
        raise cls(message, field=res.field)
    raise cls(f"changes[{index}] ({r.id}): {message}", field=res.field, details={"index": index, "id": r.id})


def _batch_item(actor: Actor, entity: str, seq: int, ch: BatchChangeIn) -> ChangeItem:
    if ch.op != "create" and ch.id is None:
        raise ValidationFailed(f"changes[{seq}]: {ch.op} needs the record id", field=f"changes.{seq}.id")
    owner = OwnerRequest(ch.owner_id, ch.owner_type, ch.business_unit_id) if ch.op == "create" else None
    base = ch.if_match if ch.op != "create" else None
    change = Change(
        seq=seq,
        op=ch.op,
        entity=entity,
        id=ch.id or str(uuid.uuid4()),
        base_version=base,
        fields=ch.attributes if ch.op != "delete" else {},
    )
    return ChangeItem(actor.user_id, change, strict=True, owner=owner)


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


# Decimals written before numbers were refused as strings (#14) may still be numeric strings;
# the regex keeps the cast from failing on anything else.
_NUMERIC = r"'^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'"


def _attr_equals(spec: Any, name: str, raw: str, arg: Callable[[Any], str], field: str) -> str:
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


def build_router(
    settings: CommonSettings,
    pool_of: Callable[[], asyncpg.Pool],
    topics_of: Callable[[], Topics],
    relay_of: Callable[[], outbox.OutboxRelay | None] = lambda: None,
) -> APIRouter:
    """``relay_of``: the data outbox's relay; writes publish their events right after the commit."""
    router = APIRouter()

    async def caller(authorization: Annotated[str | None, Header()] = None) -> Actor:
        principal = auth.verify_token(
            settings.jwt_secret, auth.bearer(authorization), auth.ADMIN_AUDIENCE, issuer=settings.jwt_issuer
        )
        async with pool_of().acquire() as conn:
            actor = (await directory.actors(conn, [principal.user_id])).get(principal.user_id)
            # A token naming an identity generation is only good for that incarnation of the id
            # (a user deleted and re-created with the same id is another person): docs/identity.md.
            if actor is not None and principal.generation is not None:
                current = await conn.fetchval("SELECT generation FROM admin.users WHERE id = $1", principal.user_id)
                if current != principal.generation:
                    actor = None
        if actor is None:
            raise Unauthenticated("unknown user")
        if not actor.enabled:
            raise Forbidden("user is disabled")
        return actor

    async def admin(actor: Annotated[Actor, Depends(caller)]) -> Actor:
        if not actor.is_admin:
            raise Forbidden("administrator role required")
        return actor

    Caller = Annotated[Actor, Depends(caller)]
    Admin = Annotated[Actor, Depends(admin)]

    async def entity_meta(conn: asyncpg.Connection, entity: str) -> EntityMeta:
        meta = (await directory.entities(conn, [entity])).get(entity)
        if meta is None:
            raise NotFound(f"no entity {entity!r}", field="entity")
        return meta

    async def write(actor: Actor, item: ChangeItem) -> dict[str, Any]:
        async with text_checked():
            return await _write(actor, item)

    @contextlib.asynccontextmanager
    async def text_checked() -> AsyncIterator[None]:
        try:
            yield
        except (asyncpg.UntranslatableCharacterError, asyncpg.CharacterNotInRepertoireError):
            # PostgreSQL text cannot hold NUL: bad input, not a server error.
            raise ValidationFailed("text must not contain NUL characters", field="attributes") from None

    async def _write(actor: Actor, item: ChangeItem) -> dict[str, Any]:
        async with pool_of().acquire() as conn, outbox.publish_after_commit(relay_of()):
            async with conn.transaction():
                stored: dict[tuple[str, str], asyncpg.Record] = {}
                [res] = await Applier(topics_of()).apply_items(
                    conn, [item], known_actors={actor.user_id: actor}, stored=stored
                )
                _raise_for(res)
                key = (item.change.entity, item.change.id)
                row = stored.get(key) or await conn.fetchrow(  # nothing written (no change): read it
                    f"SELECT * FROM {SCHEMA}.records WHERE entity = $1 AND id = $2", *key
                )
        assert row is not None
        return _wire(row)

    async def write_batch(items: list[ChangeItem]) -> dict[str, Any]:
        """Every change in one transaction, in order, or none: the first rejected change aborts
        the batch with its 4xx. One commit time (``modified_at``) for all of them."""
        async with text_checked(), pool_of().acquire() as conn, outbox.publish_after_commit(relay_of()):
            async with conn.transaction():
                results = await Applier(topics_of()).apply_items(conn, items)
                for i, res in enumerate(results):
                    _raise_for(res, i)
                # now() is the transaction's timestamp: the modified_at every written row got.
                modified_at: datetime = await conn.fetchval("SELECT now()")
        return {
            "modified_at": modified_at.isoformat(),
            "items": [
                {
                    "op": it.change.op,
                    "id": it.change.id,
                    "version": res.result.version,
                    "deleted": it.change.op == "delete",
                }
                for it, res in zip(items, results, strict=True)
            ],
        }

    def etag(response: Response, rec: dict[str, Any]) -> dict[str, Any]:
        response.headers["ETag"] = f'"{rec["version"]}"'
        return rec

    @router.post("/v1/records/{entity}", status_code=201, tags=["records"])
    async def create_record(entity: str, body: RecordIn, actor: Caller, response: Response) -> dict[str, Any]:
        owner = OwnerRequest(body.owner_id, body.owner_type, body.business_unit_id)
        change = Change(seq=0, op="create", entity=entity, id=body.id or str(uuid.uuid4()), fields=body.attributes)
        rec = await write(actor, ChangeItem(actor.user_id, change, strict=True, owner=owner))
        return etag(response, rec)

    @router.get("/v1/records/{entity}/{record_id}", tags=["records"])
    async def get_record(entity: str, record_id: str, actor: Caller, response: Response) -> dict[str, Any]:
        async with pool_of().acquire() as conn:
            meta = await entity_meta(conn, entity)
            row = await conn.fetchrow(
                f"SELECT * FROM {SCHEMA}.records WHERE entity = $1 AND id = $2", entity, record_id
            )
        owner = Ownership(row["owner_id"], row["owner_type"], row["business_unit_id"]) if row else None
        if row is None or row["deleted"] or not may(actor, Operation.READ, entity, meta.ownership, owner):  # type: ignore[arg-type]
            raise NotFound(f"no {entity} record {record_id}")
        return etag(response, _wire(row))

    @router.patch("/v1/records/{entity}/{record_id}", tags=["records"])
    async def update_record(
        entity: str,
        record_id: str,
        body: RecordPatch,
        actor: Caller,
        response: Response,
        if_match: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        change = Change(
            seq=0, op="update", entity=entity, id=record_id, base_version=_version(if_match), fields=body.attributes
        )
        return etag(response, await write(actor, ChangeItem(actor.user_id, change, strict=True)))

    @router.delete("/v1/records/{entity}/{record_id}", status_code=204, tags=["records"])
    async def delete_record(
        entity: str, record_id: str, actor: Caller, if_match: Annotated[str | None, Header()] = None
    ) -> Response:
        change = Change(seq=0, op="delete", entity=entity, id=record_id, base_version=_version(if_match))
        await write(actor, ChangeItem(actor.user_id, change, strict=True))
        return Response(status_code=204)

    @router.post("/v1/records/{entity}/batch", tags=["records"])
    async def batch_write(entity: str, body: BatchIn, actor: Caller) -> dict[str, Any]:
        """Up to MAX_BATCH creates, updates and deletes of ``entity`` in one transaction: each
        authorized, validated and versioned as its single-record call (``if_match`` as If-Match),
        each emitting its RecordChanged. All or nothing."""
        return await write_batch([_batch_item(actor, entity, i, ch) for i, ch in enumerate(body.changes)])

    @router.get("/v1/records/{entity}", tags=["records"])
    async def query_records(
        entity: str,
        request: Request,
        actor: Caller,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        after: Annotated[str | None, Query(description="Page cursor: the last id of the previous page.")] = None,
        owner_id: str | None = None,
        modified_since: Instant | None = None,
        include_deleted: bool = False,
    ) -> dict[str, Any]:
        """Records of ``entity`` the caller may read, by id; ``attr.<name>=<value>`` filters on equality."""
        async with pool_of().acquire() as conn:
            meta = await entity_meta(conn, entity)
            scope = read_scope(actor, entity, meta.ownership)
            if scope.nothing:
                return {"items": [], "next_after": None}
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
            for key, value in request.query_params.items():
                if key.startswith("attr."):
                    name = key[5:]
                    if name not in meta.attributes:
                        raise ValidationFailed(f"unknown attribute {name!r}", field=key)
                    where.append(_attr_equals(meta.attributes[name], arg(name), value, arg, key))
            rows = await conn.fetch(
                f"SELECT * FROM {SCHEMA}.records WHERE {' AND '.join(where)} ORDER BY id LIMIT {arg(limit)}", *args
            )
        items = [_wire(r) for r in rows]
        return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}

    @router.post("/v1/records/{entity}/import", tags=["records"])
    async def bulk_import(entity: str, request: Request, actor: Caller) -> dict[str, Any]:
        """NDJSON body: one ``{"id"?, "attributes", "owner_id"?, "owner_type"?}`` per line. All or nothing."""
        async with pool_of().acquire() as conn, outbox.publish_after_commit(relay_of()):
            meta = await entity_meta(conn, entity)
            summary = await import_records(
                conn, entity, meta, actor, ndjson_lines(request.stream()), topics_of().records
            )
        return {"imported": summary.imported, "created": summary.created, "updated": summary.updated}

    def page_filters(filters: dict[str, Any], since: datetime | None, after: int | None) -> tuple[str, list[Any]]:
        where, args = ["true"], []
        for col, value in filters.items():
            if value is not None:
                args.append(value)
                where.append(f"{col} = ${len(args)}")
        if since is not None:
            args.append(since)
            where.append(f"at >= ${len(args)}")
        if after is not None:
            args.append(after)
            where.append(f"id > ${len(args)}")
        return " AND ".join(where), args

    @router.get("/v1/conflicts", tags=["admin"])
    async def list_conflicts(
        _: Admin,
        entity: str | None = None,
        record_id: str | None = None,
        user_id: str | None = None,
        device_id: str | None = None,
        outcome: str | None = None,
        policy: str | None = None,
        since: Instant | None = None,
        after: IdCursor | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        where, args = page_filters(
            {
                "entity": entity,
                "record_id": record_id,
                "user_id": user_id,
                "device_id": device_id,
                "outcome": outcome,
                "policy": policy,
            },
            since,
            after,
        )
        rows = await pool_of().fetch(f"SELECT * FROM {SCHEMA}.conflicts WHERE {where} ORDER BY id LIMIT {limit}", *args)
        items = [{**dict(r), "at": r["at"].isoformat()} for r in rows]
        return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}

    @router.get("/v1/sync-errors", tags=["admin"])
    async def list_sync_errors(
        _: Admin,
        user_id: str | None = None,
        device_id: str | None = None,
        entity: str | None = None,
        record_id: str | None = None,
        code: str | None = None,
        status: str | None = None,
        since: Instant | None = None,
        after: IdCursor | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> dict[str, Any]:
        where, args = page_filters(
            {
                "user_id": user_id,
                "device_id": device_id,
                "entity": entity,
                "record_id": record_id,
                "code": code,
                "status": status,
            },
            since,
            after,
        )
        rows = await pool_of().fetch(
            f"SELECT * FROM {SCHEMA}.sync_errors WHERE {where} ORDER BY id LIMIT {limit}", *args
        )
        items = [
            {**dict(r), "at": r["at"].isoformat(), "resolved_at": r["resolved_at"] and r["resolved_at"].isoformat()}
            for r in rows
        ]
        return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}

    @router.post("/v1/sync-errors/{error_id}/reapply", tags=["admin"])
    async def reapply(
        error_id: Annotated[int, Path(ge=0, le=PG_BIGINT_MAX)], _: Admin, body: ReapplyIn | None = None
    ) -> dict[str, Any]:
        """Re-apply a ledgered change as its user, now; the device gets the outcome on batch-results."""
        force = body.force if body else False
        async with pool_of().acquire() as conn:
            async with conn.transaction():
                err = await conn.fetchrow(f"SELECT * FROM {SCHEMA}.sync_errors WHERE id = $1 FOR UPDATE", error_id)
                if err is None:
                    raise NotFound(f"no sync error {error_id}")
                if err["status"] == "reapplied":
                    raise Conflict("this change was already re-applied")
                change = Change.model_validate(err["change"])
                if force:
                    change = change.model_copy(update={"base_version": None})
                batch_id = f"{err['batch_id'] or 'api'}:reapply:{error_id}"
                [res] = await Applier(topics_of()).apply_items(
                    conn, [ChangeItem(err["user_id"], change, err["device_id"], batch_id)]
                )
                ok = res.result.status != "rejected" and (res.decision is None or res.decision.applied_as_sent)
                resolution = res.result.model_dump(mode="json")
                await conn.execute(
                    f"UPDATE {SCHEMA}.sync_errors SET status = $2, resolved_at = now(), resolution = $3::text::jsonb WHERE id = $1",
                    error_id,
                    "reapplied" if ok else "failed_again",
                    orjson.dumps(resolution).decode(),
                )
                if err["device_id"]:
                    answer = BatchApplied(
                        batch_id=batch_id, device_id=err["device_id"], user_id=err["user_id"], results=[res.result]
                    )
                    await write_outbox(conn, [(topics_of().batch_results, answer.envelope(err["device_id"]))])
        return {"status": "reapplied" if ok else "failed_again", "result": resolution}

    @router.post(
        "/v1/sync-errors/{error_id}/dismiss",
        tags=["admin"],
        response_model=DismissedOut,
        summary="Dismiss a sync error",
        description="Mark a ledgered change as dismissed: the admin decided not to re-apply it. "
        "Already re-applied changes cannot be dismissed (409).",
    )
    async def dismiss(error_id: Annotated[int, Path(ge=1, le=2**62)], _: Admin) -> DismissedOut:
        async with pool_of().acquire() as conn:
            status = await conn.fetchval(
                f"""UPDATE {SCHEMA}.sync_errors SET status = 'dismissed', resolved_at = now()
                    WHERE id = $1 AND status <> 'reapplied' RETURNING status""",
                error_id,
            )
            if status is None:
                if await conn.fetchval(f"SELECT 1 FROM {SCHEMA}.sync_errors WHERE id = $1", error_id):
                    raise Conflict("this change was already re-applied")
                raise NotFound(f"no sync error {error_id}")
        return DismissedOut(id=error_id)

    return router
