"""Payloads of ``offsync.batch-results.v1`` (key: device id): the outcome of each uploaded batch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from offsync_shared.events import Event, register


class ChangeResult(Event):
    seq: int
    entity: str
    id: str
    status: Literal["applied", "conflict", "rejected"]
    version: int | None = Field(
        None, description="Record version after the change (applied) or the server's (conflict)."
    )
    record: dict[str, Any] | None = Field(
        None, description="Winning record on conflict: {'version','deleted','attributes'}."
    )
    code: str | None = Field(None, description="Error code when rejected, e.g. forbidden, validation, not_found.")
    message: str | None = None


@register
class BatchApplied(Event):
    TYPE = "batch.applied"
    batch_id: str
    device_id: str
    user_id: str
    results: list[ChangeResult]
