"""The audit log, read by admins: filters by actor, target and time, paged by entry id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from offsync_shared.query_types import IdCursor, Instant
from profile_service import audit
from profile_service.context import CtxDep

router = APIRouter(prefix="/v1", tags=["audit"])
MAX_PAGE = 500


class AuditEntryOut(BaseModel):
    id: int = Field(description="Entry id: increasing, the paging cursor.")
    at: datetime = Field(description="When the change was committed.")
    actor_id: str = Field(description="The admin user who made it.")
    client_address: str | None = Field(description="The address the request came from.")
    method: str
    path: str = Field(description="The request path, e.g. /v1/roles/field.")
    route: str = Field(description="The route it matched, e.g. /v1/roles/{role_id}.")
    target_kind: str = Field(description="What was changed: roles, users, teams, profiles, org-settings, tokens …")
    target_id: str | None = Field(description="Which one (the route's first id), when the route names one.")
    details: dict[str, Any] = Field(description="The request body, fields that hold secrets redacted.")


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="Read the audit log of admin changes",
    description=(
        "Every change made through the admin API (organization, roles, users, teams, entities, org "
        "settings, profiles, solutions, tokens minted), oldest first: who, what, when, from which address. "
        "Append-only: no API or SQL can change or delete an entry. Filter by actor, target and time "
        "range; page with `after` = the previous page's `next_after`."
    ),
)
async def read_audit_log(
    ctx: CtxDep,
    actor_id: Annotated[str | None, Query(max_length=200, description="Only changes by this user.")] = None,
    target_kind: Annotated[str | None, Query(max_length=64, description="e.g. roles, users, org-settings.")] = None,
    target_id: Annotated[str | None, Query(max_length=200, description="Only changes of this object.")] = None,
    since: Annotated[Instant | None, Query(description="Entries at or after this instant.")] = None,
    until: Annotated[Instant | None, Query(description="Entries before this instant.")] = None,
    after: Annotated[IdCursor | None, Query(description="Entries after this id (paging).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPage:
    async with ctx.read() as conn:
        rows = await audit.read(
            conn,
            actor_id=actor_id,
            target_kind=target_kind,
            target_id=target_id,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )
    items = [AuditEntryOut(**dict(r)) for r in rows]
    return AuditPage(items=items, next_after=items[-1].id if len(items) == limit else None)
