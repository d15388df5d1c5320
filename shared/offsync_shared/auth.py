"""Bearer tokens (JWT, HS256): who is calling and for which audience.

Two audiences: ``offsync-admin`` for the admin and records APIs, ``offsync-device`` for the
device websocket. A device token used on an admin endpoint is refused, and the reverse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from offsync_shared.errors import Unauthenticated

ADMIN_AUDIENCE = "offsync-admin"
DEVICE_AUDIENCE = "offsync-device"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    audience: str
    expires_at: float
    device_id: str | None = None
    # The user row's identity generation the token was minted for (claim ``gen``); a service
    # that reads the user compares it, so a re-created user with the same id is not this one.
    # None for tokens minted without it (tests, external issuers).
    generation: str | None = None
    # The sign-in session (refresh-token chain) the token belongs to (claim ``sid``), if any.
    session_id: str | None = None


def issue_token(
    secret: str,
    user_id: str,
    audience: str,
    *,
    ttl_seconds: int = 3600,
    issuer: str = "offsync",
    device_id: str | None = None,
    generation: str | None = None,
    session_id: str | None = None,
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    claims: dict[str, object] = {
        "sub": user_id,
        "aud": audience,
        "iss": issuer,
        "iat": int(now),
        "exp": int(now + ttl_seconds),
    }
    if device_id is not None:
        claims["did"] = device_id
    if generation is not None:
        claims["gen"] = generation
    if session_id is not None:
        claims["sid"] = session_id
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str, audience: str, *, issuer: str = "offsync", leeway: float = 5.0) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": ["sub", "aud", "exp", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthenticated("token is not valid for this API (wrong audience)") from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    sub = claims["sub"]
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("invalid token: bad subject")
    gen, sid = claims.get("gen"), claims.get("sid")
    return Principal(
        user_id=sub,
        audience=audience,
        expires_at=float(claims["exp"]),
        device_id=claims.get("did"),
        generation=gen if isinstance(gen, str) else None,
        session_id=sid if isinstance(sid, str) else None,
    )


def bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("authorization header must be 'Bearer <token>'")
    return token.strip()


# The first administrator, created by profile-service on an empty database.
BOOTSTRAP_ADMIN_USER_ID = "00000000-0000-0000-0000-000000000001"
