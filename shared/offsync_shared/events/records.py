"""Payloads of ``offsync.records.v1`` (key: ``entity:record id``): every committed record change."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from offsync_shared.events import Event, register


@register
class RecordChanged(Event):
    TYPE = "record.changed"
    entity: str
    id: str
    version: int = Field(description="Version after this change; strictly increasing per record.")
    deleted: bool = False
    owner_id: str | None = Field(None, description="Owning user or team id.")
    owner_type: Literal["user", "team"] | None = None
    business_unit_id: str | None = Field(None, description="Owning business unit.")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Full current attribute values.")
    committed_at: float = Field(description="Server commit time, unix seconds (latency measurement).")
    source: dict[str, Any] = Field(default_factory=dict, description="{'device_id','batch_id'} or {'api': user id}.")
