"""The admin endpoints over the conflicts log and the sync error ledger: list them, re-apply a
ledgered change, dismiss it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from conflict_service import conflict_log, record_writes, sync_error_ledger
from conflict_service.context import AdminCtxDep
from offsync_shared.errors import Conflict, NotFound
from offsync_shared.events.batch_results import ChangeResult
from offsync_shared.paging import Window
from offsync_shared.query_types import PG_BIGINT_MAX, IdCursor, Instant

router = APIRouter(prefix="/v1", tags=["admin"])

MAX_PAGE = 500


class ConflictOut(BaseModel):
    id: int = Field(description="Entry id: increasing, the paging cursor.")
    at: str = Field(description="When it was logged (ISO 8601).")
    entity: str
    record_id: str
    user_id: str | None = Field(description="Whose change met the concurrent server change.")
    device_id: str | None = Field(description="The device it came from; null for the records API.")
    batch_id: str | None
    seq: int | None = Field(description="The change's position in its batch.")
    op: Literal["create", "update", "delete"]
    policy: str = Field(description="The policy that settled it: client_wins, server_wins or field_merge.")
    outcome: str = Field(description="How it ended (docs/conflicts.md): client_wins, server_wins, merged.")
    base_version: int | None = Field(description="The version the change was based on.")
    server_version: int = Field(description="The server's version it met.")
    server_record: dict[str, Any] = Field(description="{version, deleted, attributes} before the change.")
    client_change: dict[str, Any] = Field(description="The change as sent.")
    result_record: dict[str, Any] = Field(description="{version, deleted, attributes} after the decision.")
    lost_fields: list[str] = Field(description="The change's fields that did not make it.")


class ConflictPage(BaseModel):
    items: list[ConflictOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class SyncErrorOut(BaseModel):
    id: int = Field(description="Entry id: increasing, the paging cursor.")
    at: str = Field(description="When it was ledgered (ISO 8601).")
    user_id: str
    device_id: str | None
    batch_id: str | None
    seq: int | None
    entity: str
    record_id: str
    op: Literal["create", "update", "delete"]
    code: str = Field(description="Why: an error code (docs/errors.md) or the conflict outcome.")
    message: str | None
    field: str | None = Field(description="The field at fault, when one is.")
    change: dict[str, Any] = Field(description="The change as sent.")
    status: Literal["open", "reapplied", "failed_again", "dismissed"]
    resolved_at: str | None = Field(description="When it was re-applied or dismissed (ISO 8601).")
    resolution: dict[str, Any] | None = Field(description="The re-apply's result.")


class SyncErrorPage(BaseModel):
    items: list[SyncErrorOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class ReapplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(False, description="Apply over the current server version (no conflict check).")


class ReappliedOut(BaseModel):
    status: Literal["reapplied", "failed_again"] = Field(description="Whether the change made it as sent this time.")
    result: ChangeResult = Field(description="The change's result, as its device gets it on batch-results.")


class DismissedOut(BaseModel):
    id: int = Field(description="The sync error's id")
    status: Literal["dismissed"] = Field("dismissed", description="Its status now")


def _next_after(items: Sequence[ConflictOut] | Sequence[SyncErrorOut], limit: int) -> int | None:
    """A full page may have a next one: its cursor is the last id."""
    return items[-1].id if len(items) == limit else None


def _iso(row: asyncpg.Record, *columns: str) -> dict[str, Any]:
    out = dict(row)
    for c in columns:
        out[c] = row[c] and row[c].isoformat()
    return out


class PageQuery(BaseModel):
    """Paging and the time filter every ledger list takes; subclasses add the equality filters."""

    since: Instant | None = Field(None, description="Entries at or after this instant.")
    after: IdCursor | None = Field(None, description="Entries after this id: the previous page's `next_after`.")
    limit: int = Field(100, ge=1, le=MAX_PAGE)

    def equal(self) -> dict[str, object | None]:
        """The equality filters, by column."""
        return self.model_dump(exclude={"since", "after", "limit"})

    def window(self) -> Window:
        return Window(self.limit, since=self.since, after=self.after)


class ConflictQuery(PageQuery):
    entity: str | None = None
    record_id: str | None = None
    user_id: str | None = None
    device_id: str | None = None
    outcome: str | None = Field(None, description="client_wins, server_wins or merged.")
    policy: str | None = Field(None, description="client_wins, server_wins or field_merge.")


class SyncErrorQuery(PageQuery):
    user_id: str | None = None
    device_id: str | None = None
    entity: str | None = None
    record_id: str | None = None
    code: str | None = None
    status: str | None = Field(None, description="open, reapplied, failed_again or dismissed.")


@router.get(
    "/conflicts",
    response_model=ConflictPage,
    summary="List the conflicts log",
    description="Every concurrent server change a device or API change met, and how the conflict policy "
    "settled it, oldest first. Filter by record, user, device, outcome, policy and time; page with `after`.",
)
async def list_conflicts(ctx: AdminCtxDep, q: Annotated[ConflictQuery, Query()]) -> ConflictPage:
    async with ctx.read() as conn:
        rows = await conflict_log.page(conn, q.equal(), q.window())
    items = [ConflictOut(**_iso(r, "at")) for r in rows]
    return ConflictPage(items=items, next_after=_next_after(items, q.limit))


@router.get(
    "/sync-errors",
    response_model=SyncErrorPage,
    summary="List the sync error ledger",
    description="Every change that did not make it as sent (rejected, or lost to a conflict), with why, oldest "
    "first. Filter by user, device, record, code, status and time; page with `after`.",
)
async def list_sync_errors(ctx: AdminCtxDep, q: Annotated[SyncErrorQuery, Query()]) -> SyncErrorPage:
    async with ctx.read() as conn:
        rows = await sync_error_ledger.page(conn, q.equal(), q.window())
    items = [SyncErrorOut(**_iso(r, "at", "resolved_at")) for r in rows]
    return SyncErrorPage(items=items, next_after=_next_after(items, q.limit))


@router.post(
    "/sync-errors/{error_id}/reapply",
    response_model=ReappliedOut,
    summary="Re-apply a ledgered change",
    description="Apply the change again as its user, now (with `force`, over the current server version); "
    "its device gets the outcome on batch-results. A change already re-applied is refused (409).",
)
async def reapply(
    error_id: Annotated[int, Path(ge=0, le=PG_BIGINT_MAX)], ctx: AdminCtxDep, body: ReapplyIn | None = None
) -> ReappliedOut:
    done = await record_writes.reapply(ctx, error_id, body.force if body else False)
    return ReappliedOut(status=done.status, result=done.result)


@router.post(
    "/sync-errors/{error_id}/dismiss",
    response_model=DismissedOut,
    summary="Dismiss a sync error",
    description="Mark a ledgered change as dismissed: the admin decided not to re-apply it. "
    "Already re-applied changes cannot be dismissed (409).",
)
async def dismiss(error_id: Annotated[int, Path(ge=1, le=2**62)], ctx: AdminCtxDep) -> DismissedOut:
    async with ctx.read() as conn:
        now = await sync_error_ledger.dismiss(conn, error_id)
    if now == "reapplied":
        raise Conflict("this change was already re-applied")
    if now == "missing":
        raise NotFound(f"no sync error {error_id}")
    return DismissedOut(id=error_id)
