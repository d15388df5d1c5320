"""Payloads of ``offsync.device-batches.v1`` (key: device id, so one device's batches stay in order)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from offsync_shared.events import Event, register


class Change(Event):
    seq: int = Field(description="Position of the change in the batch (0-based).")
    op: Literal["create", "update", "delete"]
    entity: str
    id: str = Field(description="Record id; for creates a client-generated UUID.")
    base_version: int | None = Field(None, description="Version the change was based on (update/delete).")
    fields: dict[str, Any] = Field(default_factory=dict, description="Changed attribute values.")


@register
class BatchUploaded(Event):
    TYPE = "batch.uploaded"
    batch_id: str
    device_id: str
    user_id: str
    changes: list[Change]
    received_at: float
