"""The lean transport's opening handshake (ws_handshake.py) against websockets' ServerProtocol,
which answered it before: the same verdict and the same answer, byte for byte but the Date, for
good upgrade requests and for each way of getting one wrong."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from websockets.server import ServerProtocol
from websockets.utils import accept_key as websockets_accept_key

from sync_service.ws_handshake import Refused, Request, check, read_request, rejection, switching_protocols

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = [
    ("Host", "gw:8080"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def head(headers: list[tuple[str, str]], method: str = "GET", target: str = "/v1/sync?x=1") -> bytes:
    """A request head as uvicorn re-serializes the one it parsed."""
    lines = [f"{method} {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def without(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in GOOD if n != name]


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in GOOD]


def undated(response: bytes) -> bytes:
    return re.sub(rb"(?i)date: [^\r]*\r\n", b"", response)


def websockets_answer(data: bytes) -> bytes | None:
    """websockets' answer (None: it closes without one)."""
    server = ServerProtocol()
    server.receive_data(data)
    events = server.events_received()
    if not events:  # refused while parsing (431, 414), or not answered at all
        return b"".join(server.data_to_send()) or None
    server.send_response(server.accept(events[0]))  # type: ignore[arg-type]
    return b"".join(server.data_to_send())


def our_answer(data: bytes) -> bytes | None:
    request, _ = read_request(data)
    if request is None:
        return None
    if isinstance(request, bytes):
        return request
    try:
        key = check(request)
    except Refused as refused:
        return refused.response
    return switching_protocols(key, [])


CASES = {
    "good": head(GOOD),
    "browser-like": head(
        GOOD
        + [
            ("Origin", "http://localhost:5173"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
            ("Sec-WebSocket-Protocol", "a, b"),
            ("Connection", "keep-alive, Upgrade"),
        ]
    ),
    "upgrade in capitals": head(replaced("Upgrade", "WebSocket")),
    "connection among others": head(replaced("Connection", "keep-alive, upgrade")),
    "POST": head(GOOD, method="POST"),
    "no Connection": head(without("Connection")),
    "Connection without upgrade": head(replaced("Connection", "keep-alive")),
    "no Upgrade": head(without("Upgrade")),
    "two protocols in Upgrade": head(replaced("Upgrade", "websocket, h2c")),
    "no key": head(without("Sec-WebSocket-Key")),
    "two keys": head(GOOD + [("Sec-WebSocket-Key", KEY)]),
    "key not base64": head(replaced("Sec-WebSocket-Key", "not base64!")),
    "key of 15 bytes": head(replaced("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA")),
    "empty key": head(replaced("Sec-WebSocket-Key", "")),
    "no version": head(without("Sec-WebSocket-Version")),
    "version 8": head(replaced("Sec-WebSocket-Version", "8")),
    "two versions": head(GOOD + [("Sec-WebSocket-Version", "13")]),
    "a body announced": head(GOOD + [("Content-Length", "5")]),
    "an empty body announced": head(GOOD + [("Content-Length", "0")]),
    "chunked": head(GOOD + [("Transfer-Encoding", "chunked")]),
    "too many headers": head(GOOD + [(f"X-{i}", "1") for i in range(130)]),
    "header line too long": head(GOOD + [("X-Long", "x" * 9000)]),
    "request line too long": head(GOOD, target="/" + "x" * 9000),
    "not HTTP": b"hello\r\n\r\n",
    "HTTP/2": b"GET / HTTP/2\r\nHost: x\r\n\r\n",
    "header without colon": head(GOOD)[:-2] + b"nonsense\r\n\r\n",
}


@pytest.mark.parametrize("data", list(CASES.values()), ids=list(CASES))
def test_same_answer_as_websockets(data: bytes) -> None:
    ours, theirs = our_answer(data), websockets_answer(data)
    if theirs is None:
        assert ours is None
        return
    assert ours is not None
    assert undated(ours) == undated(theirs)
    assert ours.split(b" ", 2)[1] == theirs.split(b" ", 2)[1]


def test_the_request_as_the_scope_needs_it() -> None:
    data = head(GOOD + [("X-Spaced", "  v  ")], target="/v1/sync?a=%20b") + b"\x81\x80rest"
    request, rest = read_request(data)
    assert isinstance(request, Request)
    assert request.method == "GET" and request.target == "/v1/sync?a=%20b"
    assert (b"x-spaced", b"v") in request.headers and (b"upgrade", b"websocket") in request.headers
    assert rest == b"\x81\x80rest"


def test_accept_key_is_rfc_6455s() -> None:
    request, _ = read_request(head(GOOD))
    assert isinstance(request, Request)
    assert check(request) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" == websockets_accept_key(KEY).encode()


def test_the_101_carries_uvicorns_headers_and_the_apps() -> None:
    answer = switching_protocols(
        b"k", [(b"server", b"uvicorn"), (b"date", b"Sat, 05 Dec 2026 22:00:00 GMT"), (b"x-app", b"1")], "v1.sync"
    )
    assert answer == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: k\r\nserver: uvicorn\r\ndate: Sat, 05 Dec 2026 22:00:00 GMT\r\nx-app: 1\r\n"
        b"Sec-WebSocket-Protocol: v1.sync\r\n\r\n"
    )
    assert b"\r\nDate: " in switching_protocols(b"k", [])  # one Date, whoever writes it


def test_a_refusal_after_the_request_is_websockets_reject() -> None:
    server = ServerProtocol()
    theirs = server.reject(HTTPStatus.FORBIDDEN, HTTPStatus.FORBIDDEN.phrase).serialize()
    assert undated(rejection(HTTPStatus.FORBIDDEN)) == undated(theirs)
