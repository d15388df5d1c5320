"""The HTTP edge every service puts in front of its routes: refuses NUL in the path and query
(PostgreSQL text cannot hold it), and caps request bodies per route, with a small cap until the
caller has shown a valid token, so nobody unauthenticated makes a service read a large body.

Order of work on a request: path/query check (a substring scan), then, only when a body is
coming, the bearer token's signature (an HMAC, microseconds), then the body: refused by its
Content-Length when that is over the cap, else read at most cap bytes. Routes that stream their
body (NDJSON import) are not buffered here: their bytes are counted and the read fails with 413
when the cap is passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offsync_shared.auth import bearer, verify_token
from offsync_shared.errors import OffsyncError, PayloadTooLarge

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """The body cap of the routes whose method and path match."""

    method: str  # "POST", "PATCH", … or "*"
    path: str  # a regular expression matched against the whole path
    max_bytes: int
    streamed: bool = False  # the route reads request.stream(): count bytes, do not buffer
    _re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_re", re.compile(self.path))

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and self._re.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Per-route caps; ``preauth_bytes`` bounds every body sent without a valid token."""

    preauth_bytes: int = 16 * KIB
    default_bytes: int = 1 * MIB
    routes: tuple[RouteLimit, ...] = ()

    def for_route(self, method: str, path: str) -> tuple[int, bool]:
        for r in self.routes:
            if r.matches(method, path):
                return r.max_bytes, r.streamed
        return self.default_bytes, False


TokenCheck = Callable[[str | None], bool]  # the Authorization header -> does it carry a valid token


class _TooLarge(PayloadTooLarge):
    pass


class EdgeGuard:
    def __init__(self, app: ASGIApp, limits: BodyLimits, authenticated: TokenCheck) -> None:
        self.app = app
        self.limits = limits
        self.authenticated = authenticated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            await _refuse(send, 400, "bad_request", "the path and query must not contain NUL characters")
            return
        length: int | None = None
        chunked = False
        auth: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _refuse(send, 400, "bad_request", "Content-Length must be a number")
                    return
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"authorization":
                auth = value.decode("latin-1")
        if not chunked and not length:  # no body coming: nothing to cap (every GET)
            await self.app(scope, receive, send)
            return
        cap, streamed = self.limits.for_route(scope["method"], scope["path"])
        who = "for this route"
        if cap > self.limits.preauth_bytes and not self.authenticated(auth):
            cap, streamed, who = self.limits.preauth_bytes, False, "without a valid bearer token"
        if length is not None and length > cap:
            await _refuse(send, 413, "payload_too_large", f"request body of {length} bytes is over {cap} bytes {who}")
            return
        if streamed:
            await self.app(scope, _counting(receive, cap, who), send)
            return
        body, complete = await _read_up_to(receive, cap)
        if not complete:
            await _refuse(send, 413, "payload_too_large", f"request body is over {cap} bytes {who}")
            return
        if _LONG_DIGITS.search(body) and _has_huge_integer(body):
            await _refuse(send, 400, "bad_request", "integers in the body must fit in 64 bits")
            return
        await self.app(scope, _replay(body, receive), send)


# Python's JSON parser (the routes') keeps any integer; orjson, PostgreSQL bigint and every
# device cannot. A run of 19+ digits is rare, so the exact check (a second parse) almost never runs.
_LONG_DIGITS = re.compile(rb"\d{19}")
_INT64 = range(-(2**63), 2**64)  # orjson (events, sync-error copies) also takes unsigned 64-bit


class _HugeInteger(ValueError):
    pass


def _checked_int(token: str) -> int:
    value = int(token)
    if value not in _INT64:
        raise _HugeInteger
    return value


def _has_huge_integer(body: bytes) -> bool:
    try:
        json.loads(body, parse_int=_checked_int)
    except _HugeInteger:
        return True
    except (ValueError, RecursionError):
        return False  # not JSON at all: the route answers that itself
    return False


async def _read_up_to(receive: Receive, cap: int) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", True  # disconnected: let the app see an empty body and the disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            return b"", False
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _counting(receive: Receive, cap: int, who: str) -> Receive:
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > cap:
                raise _TooLarge(f"request body is over {cap} bytes {who}")
        return message

    return counted


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # What the client still sends of its body is not read: end the connection.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def bearer_check(secret: str, audience: str, issuer: str) -> TokenCheck:
    """A TokenCheck for our own HS256 tokens of ``audience`` (a signature and expiry check only:
    the route's dependency still decides whether this user may do this)."""

    def check(header: str | None) -> bool:
        if not header:
            return False
        try:
            verify_token(secret, bearer(header), audience, issuer=issuer)
        except OffsyncError:
            return False
        return True

    return check
