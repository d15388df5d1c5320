"""Payloads of ``offsync.sync-notify.v1``: tells sync gateways which buckets advanced (from
publish-service) and which sign-ins were revoked (from profile-service), so they end sessions."""

from __future__ import annotations

from typing import Literal

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


RevokedBecause = Literal["signed_out", "device_revoked", "password_changed", "refresh_token_misused"]


@register
class SessionsRevoked(Event):
    """Sign-ins of one user were revoked: the gateways close the open websockets they covered
    (close 4010). Which sessions: those of a listed sign-in, every one of ``device_id``, or with
    ``all_sessions`` every one of the user but ``except_session_id``'s."""

    TYPE = "sessions.revoked"
    user_id: str = Field(description="The user whose sign-ins were revoked.")
    reason: RevokedBecause = Field(
        description=(
            "Why: the device signed out, an admin revoked it, a password change, or a refresh token "
            "of the sign-in was used twice or by another device (possible theft)."
        ),
    )
    session_ids: list[str] = Field(default_factory=list, description="Sign-ins (token claim sid) revoked.")
    device_id: str | None = Field(None, description="Every sign-in of this device of the user was revoked.")
    all_sessions: bool = Field(False, description="Every sign-in of the user was revoked (but except_session_id).")
    except_session_id: str | None = Field(None, description="The sign-in that stays (the one changing its password).")
