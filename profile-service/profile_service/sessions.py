"""Sign-in sessions: issues access tokens with rotating refresh tokens, rotates them, detects a
reused (stolen) refresh token, and revokes sessions whose grounds are gone.

A session is a chain of refresh tokens (``family_id``) started by one sign-in. Each refresh
marks the presented token rotated and issues its successor; presenting a rotated token again
means two parties hold it, so the whole chain is revoked. Only SHA-256 hashes of refresh tokens
are stored. See docs/identity.md.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg

from offsync_shared.auth import ADMIN_AUDIENCE, DEVICE_AUDIENCE, issue_token
from offsync_shared.errors import Forbidden, Unauthenticated, ValidationFailed
from profile_service import identity
from profile_service.identity import Identity

Audience = Literal["device", "admin"]
TOKEN_PREFIX = "osr_"


@dataclass(frozen=True, slots=True)
class Lifetimes:
    access_s: int = 900  # short: revocation reaches a live token within this
    refresh_s: int = 30 * 24 * 3600  # idle limit: each refresh starts a new period


@dataclass(frozen=True, slots=True)
class Issued:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    identity: Identity


def _hash(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


def may_hold(who: Identity, audience: Audience) -> str | None:
    """Why ``who`` may not hold a session for ``audience`` (None when they may)."""
    if not who.enabled:
        return "this user is disabled"
    if audience == "device" and not who.offline:
        return "no role of this user grants read_offline_profile (offline access)"
    if audience == "admin" and not who.is_admin:
        return "this user holds no administrator role"
    return None


async def start(
    conn: asyncpg.Connection,
    who: Identity,
    audience: Audience,
    device_id: str | None,
    *,
    secret: str,
    issuer: str,
    lifetimes: Lifetimes,
) -> Issued:
    """Start a session for an authenticated user: an access token and the first refresh token."""
    if audience == "device" and device_id is None:
        raise ValidationFailed("signing in a device needs a device_id", field="device_id")
    reason = may_hold(who, audience)
    if reason is not None:
        raise Forbidden(reason)
    return await _issue(conn, who, audience, device_id, str(uuid.uuid4()), secret, issuer, lifetimes)


async def _issue(
    conn: asyncpg.Connection,
    who: Identity,
    audience: Audience,
    device_id: str | None,
    family_id: str,
    secret: str,
    issuer: str,
    lifetimes: Lifetimes,
) -> Issued:
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO admin.refresh_tokens(id, family_id, user_id, generation, audience, device_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))""",
        str(uuid.uuid4()),
        family_id,
        who.user_id,
        who.generation,
        audience,
        device_id,
        _hash(raw),
        float(lifetimes.refresh_s),
    )
    access = issue_token(
        secret,
        who.user_id,
        DEVICE_AUDIENCE if audience == "device" else ADMIN_AUDIENCE,
        ttl_seconds=lifetimes.access_s,
        issuer=issuer,
        device_id=device_id if audience == "device" else None,
        generation=who.generation,
        session_id=family_id,
        now=time.time(),
    )
    return Issued(access, lifetimes.access_s, raw, lifetimes.refresh_s, family_id, who)


# Called inside the revoking transaction with (conn, user_id, family_id) when a refresh token is
# misused, so the open websockets of that sign-in close now rather than when their token expires.
OnMisuse = Callable[[asyncpg.Connection, str, str], Awaitable[None]]


async def rotate(
    conn: asyncpg.Connection,
    raw: str,
    device_id: str | None,
    *,
    secret: str,
    issuer: str,
    lifetimes: Lifetimes,
    on_misuse: OnMisuse | None = None,
) -> Issued:
    """Exchange a refresh token for a new pair, in a transaction of its own (``conn`` must not be
    in one: a revocation decided here is committed before the refusal is raised).

    A rotated token presented again, or a token presented for another device, revokes the whole
    chain (401) and calls ``on_misuse``. So does a token whose user is gone, re-created, disabled
    or no longer entitled to the audience (the gateways' own access check ends those sessions).
    """
    async with conn.transaction():
        outcome = await _rotate(conn, raw, device_id, secret, issuer, lifetimes, on_misuse)
    if isinstance(outcome, Unauthenticated):
        raise outcome
    return outcome


async def _rotate(
    conn: asyncpg.Connection,
    raw: str,
    device_id: str | None,
    secret: str,
    issuer: str,
    lifetimes: Lifetimes,
    on_misuse: OnMisuse | None,
) -> Issued | Unauthenticated:
    row = await conn.fetchrow(
        """SELECT id, family_id, user_id, generation, audience, device_id, rotated_at, revoked_at, revoked_reason,
                  expires_at < now() AS expired
           FROM admin.refresh_tokens WHERE token_hash = $1 FOR UPDATE""",
        _hash(raw),
    )
    if row is None:
        return Unauthenticated("unknown refresh token; sign in again")
    if row["revoked_at"] is not None:
        return Unauthenticated(f"this sign-in was revoked ({row['revoked_reason']}); sign in again")
    if row["rotated_at"] is not None:
        await revoke_family(conn, row["family_id"], "a refresh token was used twice (possible theft)")
        if on_misuse is not None:
            await on_misuse(conn, row["user_id"], row["family_id"])
        return Unauthenticated("refresh token already used: every token of this sign-in is revoked; sign in again")
    if row["expired"]:
        return Unauthenticated("refresh token expired; sign in again")
    if row["device_id"] != device_id:
        await revoke_family(conn, row["family_id"], "refresh token presented by another device")
        if on_misuse is not None:
            await on_misuse(conn, row["user_id"], row["family_id"])
        return Unauthenticated("refresh token belongs to another device: this sign-in is revoked; sign in again")
    who = await identity.load(conn, row["user_id"])
    if who is None or who.generation != row["generation"]:
        await revoke_family(conn, row["family_id"], "user deleted")
        return Unauthenticated("this user no longer exists; sign in again")
    reason = may_hold(who, row["audience"])
    if reason is not None:
        await revoke_family(conn, row["family_id"], reason)
        return Unauthenticated(f"this sign-in was revoked ({reason}); sign in again")
    await conn.execute("UPDATE admin.refresh_tokens SET rotated_at = now() WHERE id = $1", row["id"])
    return await _issue(conn, who, row["audience"], device_id, row["family_id"], secret, issuer, lifetimes)


async def revoke_family(conn: asyncpg.Connection, family_id: str, reason: str) -> int:
    """Revoke every token of one sign-in; returns how many were still live."""
    result = await conn.execute(
        "UPDATE admin.refresh_tokens SET revoked_at = now(), revoked_reason = $2 WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
        reason,
    )
    return int(result.split()[-1])


async def logout(conn: asyncpg.Connection, raw: str) -> tuple[str, str, int] | None:
    """Revoke the sign-in ``raw`` belongs to: its user, its id and how many tokens were still
    live (None for an unknown token, which revokes nothing)."""
    row = await conn.fetchrow("SELECT user_id, family_id FROM admin.refresh_tokens WHERE token_hash = $1", _hash(raw))
    if row is None:
        return None
    return row["user_id"], row["family_id"], await revoke_family(conn, row["family_id"], "signed out")


async def revoke_user(conn: asyncpg.Connection, user_id: str, reason: str, *, except_family: str | None = None) -> int:
    """Revoke every sign-in of ``user_id`` (but ``except_family``)."""
    result = await conn.execute(
        """UPDATE admin.refresh_tokens SET revoked_at = now(), revoked_reason = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $3""",
        user_id,
        reason,
        except_family,
    )
    return int(result.split()[-1])


async def revoke_device(conn: asyncpg.Connection, user_id: str, device_id: str, reason: str) -> int:
    """Revoke every sign-in of one device of one user."""
    result = await conn.execute(
        """UPDATE admin.refresh_tokens SET revoked_at = now(), revoked_reason = $3
           WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NULL""",
        user_id,
        device_id,
        reason,
    )
    return int(result.split()[-1])


async def revoke_lost_access(conn: asyncpg.Connection, user_ids: list[str]) -> int:
    """Revoke the sign-ins of these users that their current state no longer allows: every one
    of a disabled user, device sign-ins without read_offline_profile, admin sign-ins without an
    administrator role. Called in the transaction of every admin change to users, teams and
    roles, so a grant given back later does not bring an old sign-in back to life."""
    live = await conn.fetch(
        """SELECT DISTINCT user_id, audience FROM admin.refresh_tokens
           WHERE user_id = ANY($1::text[]) AND revoked_at IS NULL""",
        user_ids,
    )
    revoked = 0
    for row in live:
        who = await identity.load(conn, row["user_id"])
        reason = "user deleted" if who is None else may_hold(who, row["audience"])
        if reason is not None:
            result = await conn.execute(
                """UPDATE admin.refresh_tokens SET revoked_at = now(), revoked_reason = $3
                   WHERE user_id = $1 AND audience = $2 AND revoked_at IS NULL""",
                row["user_id"],
                row["audience"],
                reason,
            )
            revoked += int(result.split()[-1])
    return revoked
