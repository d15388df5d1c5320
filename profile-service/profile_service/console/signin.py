"""The console's one seam to identity: who signs in with this username and password.

Passwords, rate limits and disabled users are identity's rules (``identity.authenticate``); the
console only asks it. The password field also takes an admin API token (``POST /v1/tokens`` or
``/v1/auth/login``) whose subject is the username: how an operator signs in when users
authenticate elsewhere (OIDC) or before any password is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from offsync_shared.auth import ADMIN_AUDIENCE, verify_token
from offsync_shared.errors import OffsyncError
from profile_service import identity
from profile_service.settings import Settings


@dataclass(frozen=True)
class SignInResult:
    user_id: str | None
    generation: str | None = None  # the user row's incarnation, carried into the session
    reason: str = ""  # why it failed, for the log (never the password or token)


def _looks_like_token(password: str) -> bool:
    return password.count(".") == 2 and len(password) > 40


async def authenticate(
    pool: asyncpg.Pool, username: str, password: str, *, settings: Settings, client_address: str | None = None
) -> SignInResult:
    """Who signs in with these credentials; ``user_id`` None (with a reason) when nobody."""
    if not username or not password:
        return SignInResult(None, reason="missing username or password")
    if _looks_like_token(password):
        try:
            principal = verify_token(settings.jwt_secret, password, ADMIN_AUDIENCE, issuer=settings.jwt_issuer)
        except OffsyncError as exc:
            return SignInResult(None, reason=f"token refused: {exc.message}")
        if principal.user_id != username:
            return SignInResult(None, reason="token subject is not this user")
        return SignInResult(principal.user_id, principal.generation)
    try:
        who = await identity.authenticate(
            pool,
            username,
            password,
            client_address=client_address,
            limits=settings.login_limits(),
            env=settings.env,
        )
    except OffsyncError as exc:
        return SignInResult(None, reason=exc.message)
    return SignInResult(who.user_id, who.generation)
