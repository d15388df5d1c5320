"""Who a username and password belong to: the one sign-in rule (rate limit, argon2id check,
enabled user) every way of signing in goes through, plus setting usernames and passwords.

``authenticate`` is what other code of profile-service calls (the token endpoints, the admin
console's cookie sessions); the HTTP routes live in ``routes_auth``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from offsync_shared.errors import Conflict, Forbidden, NotFound, RateLimited, Unauthenticated, ValidationFailed
from profile_service import passwords
from profile_service.throttle import LoginLimits, retry_after

# The same answer for an unknown username and a wrong password, so neither can be told apart.
WRONG_CREDENTIALS = "wrong username or password"

_USER_SQL = """
SELECT u.id, u.username, u.password_hash, u.enabled, u.generation,
  EXISTS (SELECT 1 FROM admin.roles r WHERE r.is_admin AND (
      r.id IN (SELECT role_id FROM admin.user_roles WHERE user_id = u.id)
      OR r.id IN (SELECT tr.role_id FROM admin.team_roles tr
                  JOIN admin.team_members tm ON tm.team_id = tr.team_id WHERE tm.user_id = u.id))) AS is_admin,
  EXISTS (SELECT 1 FROM admin.roles r WHERE r.read_offline_profile AND (
      r.id IN (SELECT role_id FROM admin.user_roles WHERE user_id = u.id)
      OR r.id IN (SELECT tr.role_id FROM admin.team_roles tr
                  JOIN admin.team_members tm ON tm.team_id = tr.team_id WHERE tm.user_id = u.id))) AS offline
FROM admin.users u
"""


@dataclass(frozen=True, slots=True)
class Identity:
    """A user as sign-in sees them: who, what they may do, and which incarnation of the id."""

    user_id: str
    username: str
    enabled: bool
    is_admin: bool  # holds an is_admin role (directly or through a team): may use the admin API
    offline: bool  # holds a read_offline_profile role: may sync a device
    generation: str  # changes when the user is deleted and re-created with the same id


def _identity(row: asyncpg.Record) -> Identity:
    return Identity(
        user_id=row["id"],
        username=row["username"] or row["id"],
        enabled=row["enabled"],
        is_admin=row["is_admin"],
        offline=row["offline"],
        generation=row["generation"],
    )


async def load(conn: asyncpg.Connection, user_id: str) -> Identity | None:
    """The current identity of ``user_id``, or None if no such user exists."""
    row = await conn.fetchrow(f"{_USER_SQL} WHERE u.id = $1", user_id)
    return None if row is None else _identity(row)


async def find(conn: asyncpg.Connection, value: str, by: str) -> Identity | None:
    """The user whose ``by`` ("username", regardless of case, or "id") is ``value``."""
    if by == "id":
        return await load(conn, value)
    row = await conn.fetchrow(f"{_USER_SQL} WHERE lower(u.username) = lower($1)", value)
    return None if row is None else _identity(row)


async def authenticate(
    conn: asyncpg.Connection | asyncpg.Pool,
    username: str,
    password: str,
    *,
    client_address: str | None = None,
    limits: LoginLimits | None = None,
    env: str = "prod",
) -> Identity:
    """Check a username and password; return the user's ``Identity`` or raise.

    Raises ``RateLimited`` (429, with ``retry_after`` seconds) when this username or
    ``client_address`` had too many failed attempts recently (``limits``; the check happens
    before any password is hashed); ``Unauthenticated`` (401, the same message for an unknown
    username and a wrong password); ``Forbidden`` (403) when the password is right but the user
    is disabled. Usernames match regardless of case.

    ``conn`` may be a pool (preferred: no connection is held while the password is hashed) or a
    connection outside a transaction (failures are recorded on it and must not roll back). ``env`` is the deployment's OFFSYNC_ENV (it only picks
    the cost of the dummy hash checked for unknown usernames). The caller decides what the
    identity may do (``is_admin``, ``offline``); the password is never logged.
    """
    limits = limits or LoginLimits()
    # Text PostgreSQL cannot store (NUL, lone surrogates) still counts, under a stand-in key.
    user_key = username.strip().lower()[:256].encode("utf-8", "replace").decode().replace("\x00", "?")
    now = time.time()
    await _throttle(conn, user_key, client_address, limits, now)
    row = None
    if 0 < len(username) <= 256 and user_key == username.strip().lower():
        row = await conn.fetchrow(f"{_USER_SQL} WHERE lower(u.username) = $1", user_key)
    ok = await passwords.check_password(row["password_hash"] if row else None, password, env)
    if row is None or not ok:
        await _record_failure(conn, user_key, client_address, limits)
        raise Unauthenticated(WRONG_CREDENTIALS)
    await conn.execute("DELETE FROM admin.login_failures WHERE scope = 'user' AND key = $1", user_key)
    identity = _identity(row)
    if not identity.enabled:
        raise Forbidden("this user is disabled; ask an administrator")
    return identity


async def _throttle(
    conn: asyncpg.Connection | asyncpg.Pool, user_key: str, address: str | None, limits: LoginLimits, now: float
) -> None:
    rows = await conn.fetch(
        """SELECT scope, extract(epoch FROM at)::float8 AS at FROM admin.login_failures
           WHERE ((scope = 'user' AND key = $1) OR (scope = 'address' AND key = $2))
             AND at > now() - make_interval(secs => $3)""",
        user_key,
        address or "",
        limits.window_s,
    )
    by_user = [r["at"] for r in rows if r["scope"] == "user"]
    by_address = [r["at"] for r in rows if r["scope"] == "address"] if address else []
    waits = [
        w
        for w in (
            retry_after(by_user, limits.per_user, limits.window_s, now),
            retry_after(by_address, limits.per_address, limits.window_s, now),
        )
        if w is not None
    ]
    if waits:
        wait = max(waits)
        raise RateLimited(f"too many failed sign-in attempts; try again in {int(wait) + 1} s", retry_after=wait)


async def _record_failure(
    conn: asyncpg.Connection | asyncpg.Pool, user_key: str, address: str | None, limits: LoginLimits
) -> None:
    keys = [("user", user_key)] + ([("address", address)] if address else [])
    await conn.executemany("INSERT INTO admin.login_failures(scope, key) VALUES ($1, $2)", keys)
    # Keep the ledger small: rows older than the window no longer count.
    await conn.execute(
        "DELETE FROM admin.login_failures WHERE at < now() - make_interval(secs => $1)", limits.window_s * 2
    )


def check_username(username: str, *, field: str = "username") -> str:
    """A username as stored: trimmed, 1–128 characters, no control characters."""
    name = username.strip()
    if not 1 <= len(name) <= 128:
        raise ValidationFailed("a username has 1 to 128 characters", field=field)
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ValidationFailed("a username cannot contain control characters", field=field)
    return name


async def set_username(conn: asyncpg.Connection, user_id: str, username: str) -> None:
    """Give ``user_id`` this username (unique regardless of case; 409 if another user holds it)."""
    name = check_username(username)
    taken = await conn.fetchval(
        "SELECT id FROM admin.users WHERE lower(username) = lower($1) AND id <> $2", name, user_id
    )
    if taken is not None:
        raise Conflict(f"username {name!r} is taken", field="username")
    await conn.execute("UPDATE admin.users SET username = $2 WHERE id = $1", user_id, name)


async def store_password_hash(conn: asyncpg.Connection, user_id: str, password_hash: str) -> None:
    """Store a new password hash for ``user_id`` (hash it first with ``passwords.hash_password``)."""
    done = await conn.fetchval(
        "UPDATE admin.users SET password_hash = $2, password_changed_at = now() WHERE id = $1 RETURNING 1",
        user_id,
        password_hash,
    )
    if not done:
        raise NotFound(f"user {user_id!r} not found")


async def hash_new_password(password: str | None, env: str, *, field: str = "password") -> str | None:
    """The hash to store for a newly chosen password (None for None), after the password rules."""
    if password is None:
        return None
    passwords.check_rules(password, field=field)
    return await passwords.hash_password(password, env)
