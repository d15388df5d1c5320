"""Console sessions: who is signed in, carried in a signed, HttpOnly, SameSite=Strict cookie, and
the CSRF token every state-changing request must echo back.

The session is a short JWT for its own audience (never accepted by the APIs, and an API token is
never accepted here); its CSRF token is an HMAC of the cookie, so neither needs a server-side store.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from offsync_shared.auth import issue_token, verify_token

CONSOLE_AUDIENCE = "offsync-console"
COOKIE = "offsync_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 8 * 3600


@dataclass(frozen=True)
class ConsoleSession:
    user_id: str
    csrf: str
    generation: str | None = None  # the user's incarnation at sign-in (a re-created id is someone else)


def open_session(
    secret: str, user_id: str, *, issuer: str = "offsync", ttl_s: int = SESSION_TTL_S, generation: str | None = None
) -> str:
    """A new session cookie value for ``user_id`` (its CSRF token is derived from it)."""
    return issue_token(secret, user_id, CONSOLE_AUDIENCE, ttl_seconds=ttl_s, issuer=issuer, generation=generation)


def csrf_for(secret: str, cookie: str) -> str:
    """The CSRF token of a session: an HMAC of its cookie, so it changes with every sign-in and
    cannot be derived without the server's secret."""
    return hmac.new(secret.encode(), b"console-csrf:" + cookie.encode(), "sha256").hexdigest()


def read_session(secret: str, cookie: str | None, *, issuer: str = "offsync") -> ConsoleSession | None:
    """The session a cookie carries, or None when it is missing, forged or expired."""
    if not cookie or len(cookie) > 4096:
        return None
    try:
        principal = verify_token(secret, cookie, CONSOLE_AUDIENCE, issuer=issuer)
    except Exception:  # any invalid cookie means "not signed in"
        return None
    return ConsoleSession(principal.user_id, csrf_for(secret, cookie), principal.generation)


def csrf_ok(session: ConsoleSession, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf, sent or "")
