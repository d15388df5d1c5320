"""The console's one seam to identity: does this username/password name a user?

Passwords belong to the identity module (``profile_service.identity.authenticate``); the console
only asks it. Until that module is present, the password field takes an admin API token
(``POST /v1/tokens``) whose subject is the username, which is also how an operator signs in
when users authenticate elsewhere (OIDC).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

import asyncpg

from offsync_shared.auth import ADMIN_AUDIENCE, verify_token
from offsync_shared.errors import OffsyncError


@dataclass(frozen=True)
class SignInResult:
    user_id: str | None
    reason: str = ""  # why it failed, for the log (never the password or token)


def _identity() -> Any | None:
    try:
        return importlib.import_module("profile_service.identity")
    except ImportError:
        return None


def _looks_like_token(password: str) -> bool:
    return password.count(".") == 2 and len(password) > 40


async def authenticate(
    conn: asyncpg.Connection,
    username: str,
    password: str,
    *,
    secret: str,
    issuer: str,
    env: str = "prod",
    client_address: str | None = None,
) -> SignInResult:
    """Who signs in with these credentials; ``user_id`` None (with a reason) when nobody."""
    if not username or not password:
        return SignInResult(None, "missing username or password")
    if _looks_like_token(password):
        try:
            principal = verify_token(secret, password, ADMIN_AUDIENCE, issuer=issuer)
        except OffsyncError as exc:
            return SignInResult(None, f"token refused: {exc.message}")
        if principal.user_id != username:
            return SignInResult(None, "token subject is not this user")
        return SignInResult(principal.user_id)
    identity = _identity()
    if identity is None or not hasattr(identity, "authenticate"):
        return SignInResult(None, "password sign-in is not available; use an admin token")
    try:
        accepted = inspect.signature(identity.authenticate).parameters
        extra = {k: v for k, v in (("env", env), ("client_address", client_address)) if k in accepted}
        found = identity.authenticate(conn, username, password, **extra)
        if inspect.isawaitable(found):
            found = await found
    except OffsyncError as exc:
        return SignInResult(None, exc.message)
    if not found:
        return SignInResult(None, "wrong username or password")
    user_id = found if isinstance(found, str) else getattr(found, "user_id", None) or getattr(found, "id", None)
    return SignInResult(str(user_id)) if user_id else SignInResult(None, "wrong username or password")
