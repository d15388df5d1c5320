"""Payloads of ``offsync.sync-notify.v1``: tells sync gateways which buckets advanced."""

from __future__ import annotations

from pydantic import Field

from offsync_shared.events import Event, register


@register
class BucketsAdvanced(Event):
    TYPE = "buckets.advanced"
    buckets: dict[str, int] = Field(description="bucket id -> newest op id written to it.")
    committed_at: float = Field(description="Commit time of the ops (unix seconds).")


@register
class UserBucketsChanged(Event):
    TYPE = "user.buckets_changed"
    user_ids: list[str] = Field(description="Users whose bucket set changed (republish, move, membership).")
