"""The server's side of the websocket opening handshake (RFC 6455 4.2): reads the upgrade request
uvicorn hands over, checks it and writes the answer, as ``websockets``' ``ServerProtocol`` did.

uvicorn has parsed and validated the request head already (h11) and passes it on re-serialized,
one header a line; reading it again with ``websockets``' generator parser and answering it with
its ``Headers`` and ``Response`` objects was ~9 % of the gateway's CPU per reconnect
(docs/performance.md, reconnect). Here it is split once and the answer written as bytes. The
checks and statuses are ``websockets``' (``ServerProtocol.accept``): 405 for another method than
GET, 426 when Connection or Upgrade do not ask for a websocket, 400 for a bad
Sec-WebSocket-Key or Sec-WebSocket-Version, 414 and 431 for over-long or too many lines; a head
that is not HTTP, or announces a body, is not answered. No extension is negotiated (the
transport supports none) and no subprotocol is chosen unless the app names one.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
from http import HTTPStatus
from typing import Final, NamedTuple

MAX_LINE: Final = 8192  # as websockets (MAX_LINE_LENGTH)
MAX_HEADERS: Final = 128  # as websockets (MAX_NUM_HEADERS)
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
_FAILED: Final = "Failed to open a WebSocket connection: "


class Request(NamedTuple):
    """An upgrade request: ``headers`` as ASGI has them (lower-case names, values as sent)."""

    method: str
    target: str  # path and query, as sent
    headers: list[tuple[bytes, bytes]]


def read_request(data: bytes) -> tuple[Request | bytes | None, bytes]:
    """The request at the start of ``data`` (or the HTTP error to answer it with; None when it
    is not an HTTP request head at all: close without answering) and the bytes after its head."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None, b""
    lines = head.split(b"\r\n")
    line = lines[0]
    if len(line) + 2 > MAX_LINE:
        return _rejection(HTTPStatus.REQUEST_URI_TOO_LONG, _too_long(line)), rest
    parts = line.split(b" ", 2)
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None, rest
    try:
        method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None, rest
    if len(lines) > MAX_HEADERS + 1:
        return _rejection(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"expected no more than {MAX_HEADERS} headers"
        ), rest
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if len(line) + 2 > MAX_LINE:
            return _rejection(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, _too_long(line)), rest
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            return None, rest
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" \t") != b"0"):
            return None, rest  # websockets reads no body: it does not answer such a request
        headers.append((name, value.strip(b" \t")))
    return Request(method, target, headers), rest


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for the client's Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def check(request: Request) -> bytes:
    """The Sec-WebSocket-Accept value when ``request`` may be upgraded; otherwise raises
    ``Refused`` with the HTTP answer to send instead."""
    if request.method != "GET":
        raise Refused(
            _rejection(HTTPStatus.METHOD_NOT_ALLOWED, f"unsupported HTTP method: {request.method}", b"Allow: GET\r\n")
        )
    connection: list[bytes] = []
    upgrade: list[bytes] = []
    keys: list[bytes] = []
    versions: list[bytes] = []
    for name, value in request.headers:
        if name == b"connection":
            connection += _tokens(value)
        elif name == b"upgrade":
            upgrade += _tokens(value)
        elif name == b"sec-websocket-key":
            keys.append(value)
        elif name == b"sec-websocket-version":
            versions.append(value)
    if not any(t.lower() == b"upgrade" for t in connection):
        raise Refused(_upgrade_required("Connection", connection))
    if not (len(upgrade) == 1 and upgrade[0].lower() == b"websocket"):
        raise Refused(_upgrade_required("Upgrade", upgrade))
    if len(keys) != 1:
        raise Refused(_bad_header("Sec-WebSocket-Key", "multiple values" if keys else None))
    key = keys[0]
    try:
        raw_key = base64.b64decode(key, validate=True)
    except binascii.Error as exc:
        raise Refused(_bad_header("Sec-WebSocket-Key", f"{key.decode('latin-1')}; {exc}")) from None
    if len(raw_key) != 16:
        raise Refused(_bad_header("Sec-WebSocket-Key", key.decode("latin-1")))
    if len(versions) != 1:
        raise Refused(_bad_header("Sec-WebSocket-Version", "multiple values" if versions else None))
    if versions[0] != b"13":
        raise Refused(_bad_header("Sec-WebSocket-Version", versions[0].decode("latin-1")))
    return accept_key(key)


class Refused(Exception):
    """The upgrade request cannot be accepted: ``response`` is the HTTP answer to send."""

    def __init__(self, response: bytes) -> None:
        super().__init__(response[: response.find(b"\r\n")].decode("latin-1"))
        self.response = response


def switching_protocols(accept: bytes, headers: list[tuple[bytes, bytes]], subprotocol: str | None = None) -> bytes:
    """The 101 answer: websockets' headers, then ``headers`` (uvicorn's defaults, the app's);
    a Date only if those have none."""
    out = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    if not any(n.lower() == b"date" for n, _ in headers):
        out.append(b"Date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n")
    out.append(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n")
    for name, value in headers:
        out.append(name + b": " + value + b"\r\n")
    if subprotocol:
        out.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode("latin-1") + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def rejection(status: HTTPStatus) -> bytes:
    """An HTTP error instead of the 101 (the app refused or failed), its phrase as the body."""
    return _response(status, status.phrase.encode())


def _rejection(status: HTTPStatus, detail: str, extra: bytes = b"") -> bytes:
    return _response(status, f"{_FAILED}{detail}.\n".encode(), extra)


def _response(status: HTTPStatus, body: bytes, extra: bytes = b"") -> bytes:
    """As websockets' ``ServerProtocol.reject`` writes one."""
    return b"".join(
        (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode(),
            b"Date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n",
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            extra,
            b"\r\n",
            body,
        )
    )


def _upgrade_required(name: str, tokens: list[bytes]) -> bytes:
    value = ", ".join(t.decode("latin-1") for t in tokens)
    detail = f"invalid {name} header: {value}" if tokens else f"missing {name} header"
    text = f"{detail}.\n\nYou cannot access a WebSocket server directly with a browser. You need a WebSocket client"
    return _rejection(HTTPStatus.UPGRADE_REQUIRED, text, b"Upgrade: websocket\r\n")


def _bad_header(name: str, value: str | None) -> bytes:
    if value is None:
        detail = f"missing {name} header"
    elif value == "":
        detail = f"empty {name} header"
    else:
        detail = f"invalid {name} header: {value}"
    return _rejection(HTTPStatus.BAD_REQUEST, detail)


def _too_long(line: bytes) -> str:
    return f"read {len(line) + 2} bytes, expected no more than {MAX_LINE} bytes"


def _tokens(value: bytes) -> list[bytes]:
    return [t for t in (x.strip(b" \t") for x in value.split(b",")) if t]
