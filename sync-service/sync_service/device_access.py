"""Decides whether a device's user may sync at all, from facts read elsewhere (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from offsync_shared import protocol
from offsync_shared.events.sync_notify import SessionsRevoked


@dataclass(frozen=True, slots=True)
class Published:
    """The user's effective profile membership as profile-service last published it (the admin
    schema's current state, which publish-service's bucket store may not have caught up with)."""

    profile_id: str
    version: int


@dataclass(frozen=True, slots=True)
class AccessFacts:
    user_exists: bool
    enabled: bool
    offline_privilege: bool  # some role of the user or of a team of the user has read_offline_profile
    profile_id: str | None
    profile_version: int | None
    generation: str | None = None  # the user row's identity generation (changes on delete + re-create)
    # The admin's published membership (None: in no published profile). "unchecked": the reader
    # did not look, so the bucket store's own profile (profile_id) is taken as current.
    published: Published | None | Literal["unchecked"] = "unchecked"
    session_revoked: bool = False  # the sign-in the device's token belongs to was revoked


@dataclass(frozen=True, slots=True)
class Refusal:
    close_code: int
    reason: str


def decide(facts: AccessFacts, token_generation: str | None = None) -> Refusal | None:
    """None when the user may sync; otherwise the close code and reason the device gets.

    ``token_generation`` is the identity generation the device's token was minted for (None when
    the token names none): a different current generation means the user was deleted and
    re-created with the same id, and the token belongs to the old one.
    """
    if not facts.user_exists:
        return Refusal(protocol.CLOSE_FORBIDDEN, "forbidden: unknown user")
    if facts.session_revoked:
        return Refusal(protocol.CLOSE_REVOKED, "revoked: this sign-in was revoked; sign in again")
    if token_generation is not None and facts.generation is not None and token_generation != facts.generation:
        return Refusal(protocol.CLOSE_UNAUTHENTICATED, "unauthenticated: token was issued to a deleted user")
    if not facts.enabled:
        return Refusal(protocol.CLOSE_FORBIDDEN, "forbidden: user is disabled")
    if not facts.offline_privilege:
        return Refusal(protocol.CLOSE_FORBIDDEN, "forbidden: no role grants read_offline_profile")
    if facts.profile_id is None or facts.published is None:
        return Refusal(protocol.CLOSE_NO_PROFILE, "no_profile: no published mobile offline profile for this user")
    return None


def membership_pending(facts: AccessFacts) -> bool:
    """The admin published a profile change for this user that publish-service has not applied
    yet: the user's buckets may still hold what the new publish takes away, so nothing is sent
    from them until it has (the user.buckets_changed notification that follows ends the wait)."""
    published = facts.published
    if not isinstance(published, Published):
        return False
    return (published.profile_id, published.version) != (facts.profile_id, facts.profile_version)


def device_mismatch(token_device_id: str | None, hello_device_id: str) -> Refusal | None:
    """A token minted for one device cannot be used by another."""
    if token_device_id is not None and token_device_id != hello_device_id:
        return Refusal(protocol.CLOSE_FORBIDDEN, "forbidden: token was issued for another device")
    return None


def app_refusal(app: str | None, app_profiles: frozenset[str] | None, profile_id: str | None) -> Refusal | None:
    """An app module decides which profile a device gets for it: the user's profile must be one
    of the app's (``app_profiles``: None when no offline-enabled app module has that id or name).
    A hello without ``app`` is not checked, so devices that predate app modules keep working."""
    if app is None:
        return None
    if app_profiles is None:
        return Refusal(
            protocol.CLOSE_APP_NOT_AVAILABLE, f"app_not_available: no app module {app!r} enabled for offline"
        )
    if profile_id not in app_profiles:
        return Refusal(
            protocol.CLOSE_APP_NOT_AVAILABLE,
            f"app_not_available: this user's mobile offline profile is not attached to app module {app!r}",
        )
    return None


REVOKED_REASONS = {
    "signed_out": "revoked: signed out; sign in again",
    "device_revoked": "revoked: an administrator revoked this device; sign in again",
    "password_changed": "revoked: the password was changed; sign in again",
    "refresh_token_misused": "revoked: this sign-in's refresh token was misused (used twice or by another device); sign in again",
}


def revocation(event: SessionsRevoked, user_id: str, device_id: str, session_id: str | None) -> Refusal | None:
    """Whether revoking ``event``'s sign-ins ends a session of ``user_id``'s ``device_id``
    opened with a token of sign-in ``session_id`` (None: a token minted outside a sign-in)."""
    if user_id != event.user_id:
        return None
    ends = (
        (event.device_id is not None and device_id == event.device_id)
        or (session_id is not None and session_id in event.session_ids)
        or (event.all_sessions and (session_id is None or session_id != event.except_session_id))
    )
    return Refusal(protocol.CLOSE_REVOKED, REVOKED_REASONS[event.reason]) if ends else None
