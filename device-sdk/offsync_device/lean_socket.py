"""The device's websocket client: the client side of RFC 6455 a sync session needs — the opening
handshake, masked text frames out, text frames in (handed to a callback straight from the
socket's read, as ``transport.TappedConnection`` does), pings answered, the closing handshake —
in one ``asyncio.Protocol``.

Why not ``websockets``' client: a reconnect is one short connection, and its machinery (the
request and response objects and their header parsing, the generator-based parsers, the send
context and its futures, ~17 event-loop steps) were about half of what a reconnect cost the
device: against a trivial server in one process, 430 µs per connect, send, receive and close,
215 µs with this one, server and kernel included (docs/performance.md, reconnect). ``websockets``
still serves what this does not: a proxy from the environment and ``user:pass@`` in the URL
(``supports`` tells; ``client.Device`` picks).
The errors raised are ``websockets``' own (``InvalidStatus``, ``InvalidHandshake``,
``ConnectionClosed``), so callers handle both clients alike.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import ssl as ssl_module
import struct
from collections.abc import Callable

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidHandshake, InvalidStatus
from websockets.frames import Close, apply_mask  # apply_mask: websockets' C speedup when built
from websockets.headers import build_host
from websockets.http11 import Response
from websockets.uri import parse_uri

OnText = Callable[[bytes], None]  # one whole text message, UTF-8 left to the JSON parser

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_RESPONSE_HEAD = 64 * 1024  # a handshake answer larger than this is not a websocket server's
CLOSE_TIMEOUT_S = 10.0  # how long the closing handshake may take before the socket is dropped

OPEN, CLOSING, CLOSED = 1, 2, 3
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_NORMAL, _PROTOCOL_ERROR, _ABNORMAL, _NO_STATUS = 1000, 1002, 1006, 1005


class LeanSocket(asyncio.Protocol):
    """One device connection. ``await connect(...)`` opens it; then ``send``, ``close``,
    ``lost`` (a future done when the TCP connection is gone), ``close_code`` and
    ``close_reason`` (``websockets``' meaning: None until closed, 1006 without a close frame)."""

    def __init__(self, request: bytes, key: bytes, on_text: OnText) -> None:
        self._request = request
        self._accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.on_text = on_text
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.state = 0  # connecting, then OPEN, CLOSING, CLOSED
        self._buf = bytearray()
        self._parts: list[bytes] | None = None  # a fragmented text message being reassembled
        self._skip_message = False  # a fragmented binary message: not ours, dropped
        self._rcvd: Close | None = None
        self._sent: Close | None = None
        self._drain: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self.state == 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_RESPONSE_HEAD:
                    self._fail_handshake(InvalidHandshake("handshake answer too large"))
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            error = self._check_response(head)
            if error is not None:
                self._fail_handshake(error)
                return
            self.state = OPEN
            if not self.opened.done():
                self.opened.set_result(None)
            if not buf:
                return
        self._frames()

    def eof_received(self) -> bool | None:
        return None  # the server closes first (RFC 6455 7.1.1): close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._opening_failed(exc or ConnectionResetError("connection closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)
        self._release_drain()

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        self._release_drain()

    # ------------------------------------------------------------------------- public ---
    @property
    def close_code(self) -> int | None:
        if self.state != CLOSED:
            return None
        return _ABNORMAL if self._rcvd is None else self._rcvd.code

    @property
    def close_reason(self) -> str | None:
        if self.state != CLOSED:
            return None
        return "" if self._rcvd is None else self._rcvd.reason

    async def send(self, message: str | bytes) -> None:
        """One text message (str, or bytes already UTF-8)."""
        if self.state != OPEN:
            raise self._closed_error()
        self._write_frame(_TEXT, message.encode() if isinstance(message, str) else message)
        if self._drain is not None:
            await asyncio.shield(self._drain)
            if self.state == CLOSED:
                raise self._closed_error()

    async def close(self, code: int = _NORMAL, reason: str = "") -> None:
        """The closing handshake (or what is left of it); returns once the socket is closed."""
        if self.state == OPEN:
            self._send_close(Close(code, reason))
        if self.state != CLOSED:
            if self._close_timer is None:
                self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._abort)
            await asyncio.shield(self.lost)

    # ------------------------------------------------------------------------ helpers ---
    def _check_response(self, head: bytes) -> Exception | None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            return InvalidHandshake(f"not an HTTP answer: {lines[0][:80]!r}")
        fields: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return InvalidHandshake(f"bad header line: {line[:80]!r}")
            fields.append((name.strip(), value.strip()))
        status = int(parts[1])
        if status != 101:
            headers = Headers()
            for name, value in fields:
                headers[name] = value
            return InvalidStatus(Response(status, parts[2] if len(parts) > 2 else "", headers, b""))
        h: dict[str, list[str]] = {}
        for name, value in fields:
            h.setdefault(name.lower(), []).append(value)
        if [v.lower() for v in h.get("upgrade", ())] != ["websocket"]:
            return InvalidHandshake("the answer does not upgrade to websocket")
        if "upgrade" not in {t.strip().lower() for v in h.get("connection", ()) for t in v.split(",")}:
            return InvalidHandshake("the answer's Connection header lacks upgrade")
        if [v.encode() for v in h.get("sec-websocket-accept", ())] != [self._accept]:
            return InvalidHandshake("wrong Sec-WebSocket-Accept")
        if "sec-websocket-extensions" in h or "sec-websocket-protocol" in h:
            return InvalidHandshake("the server chose an extension or subprotocol nobody asked for")
        return None

    def _fail_handshake(self, exc: Exception) -> None:
        self._opening_failed(exc)
        self.transport.abort()

    def _opening_failed(self, exc: BaseException) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # whoever awaits it still gets it; nobody else logs it

    def _frames(self) -> None:
        buf = self._buf
        at, size = 0, len(buf)
        while size - at >= 2 and self.state != CLOSED:
            b0, b1 = buf[at], buf[at + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if size - at < 4:
                    break
                n = struct.unpack_from("!H", buf, at + 2)[0]
                head = 4
            elif n == 127:
                if size - at < 10:
                    break
                n = struct.unpack_from("!Q", buf, at + 2)[0]
                head = 10
            if size - at < head + n:
                break
            payload = bytes(buf[at + head : at + head + n])
            at += head + n
            op = b0 & 0x0F
            if b0 & 0x70 or b1 & 0x80 or (op >= 8 and (n > 125 or not b0 & 0x80)):
                self._fail(_PROTOCOL_ERROR, "bad frame")  # reserved bits, a masked or a bad control frame
                break
            self._frame(op, bool(b0 & 0x80), payload)
        del buf[:at]

    def _frame(self, op: int, fin: bool, payload: bytes) -> None:
        if op == _TEXT or op == _BINARY:
            if self._parts is not None or self._skip_message:
                self._fail(_PROTOCOL_ERROR, "new message inside a fragmented one")
            elif op == _BINARY:
                self._skip_message = not fin  # the protocol is text; a binary message is not ours
            elif fin:
                self.on_text(payload)
            else:
                self._parts = [payload]
        elif op == _CONT:
            if self._skip_message:
                self._skip_message = not fin
            elif self._parts is None:
                self._fail(_PROTOCOL_ERROR, "continuation of nothing")
            else:
                self._parts.append(payload)
                if fin:
                    parts, self._parts = self._parts, None
                    self.on_text(b"".join(parts))
        elif op == _PING:
            if self.state == OPEN:
                self._write_frame(_PONG, payload)
        elif op == _PONG:
            pass
        elif op == _CLOSE:
            self._closed_by_peer(payload)
        else:
            self._fail(_PROTOCOL_ERROR, "unknown opcode")

    def _closed_by_peer(self, payload: bytes) -> None:
        if len(payload) >= 2:
            code = struct.unpack_from("!H", payload)[0]
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(_PROTOCOL_ERROR, "close reason is not UTF-8")
                return
            self._rcvd = Close(code, reason)
        elif not payload:
            self._rcvd = Close(_NO_STATUS, "")
        else:
            self._fail(_PROTOCOL_ERROR, "bad close frame")
            return
        if self.state == OPEN:
            self._write_frame(_CLOSE, payload)  # echo it: the closing handshake
            self._sent = self._rcvd
            self.state = CLOSING
        # The server now closes the TCP connection; if it does not, we do.
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._abort)

    def _send_close(self, close: Close) -> None:
        self._write_frame(_CLOSE, close.serialize())
        self._sent = close
        self.state = CLOSING

    def _fail(self, code: int, reason: str) -> None:
        if self.state == OPEN:
            self._send_close(Close(code, reason))
        self.state = CLOSING
        self.transport.close()

    def _abort(self) -> None:
        self._close_timer = None
        self.transport.abort()

    def _write_frame(self, op: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | op, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | op, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | op, 0x80 | 127, n)
        mask = os.urandom(4)
        self.transport.write(head + mask + apply_mask(payload, mask))

    def _release_drain(self) -> None:
        d, self._drain = self._drain, None
        if d is not None and not d.done():
            d.set_result(None)

    def _closed_error(self) -> ConnectionClosedError | ConnectionClosedOK:
        rcvd, sent = self._rcvd, self._sent
        both = rcvd is not None and sent is not None
        if rcvd is not None and rcvd.code in (_NORMAL, 1001) and both:
            return ConnectionClosedOK(rcvd, sent, rcvd_then_sent=True)
        return ConnectionClosedError(rcvd, sent, rcvd_then_sent=True if both else None)


@functools.cache
def _tls_context() -> ssl_module.SSLContext:
    """One default context per process (building one loads the CA store: ~17 ms)."""
    return ssl_module.create_default_context()


def supports(url: str, proxy: str | None) -> bool:
    """Whether ``connect`` can open ``url`` (else use ``websockets``' client)."""
    try:
        uri = parse_uri(url)
    except Exception:  # noqa: BLE001 - websockets' connect words the error
        return False
    return proxy is None and uri.user_info is None


async def connect(
    url: str,
    on_text: OnText,
    *,
    headers: dict[str, str] | None = None,
    user_agent: str | None = None,
    open_timeout: float = 10.0,
) -> LeanSocket:
    """Opens the websocket (TCP, TLS for wss://, the opening handshake) within ``open_timeout``."""
    uri = parse_uri(url)
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {uri.resource_name} HTTP/1.1",
        f"Host: {build_host(uri.host, uri.port, uri.secure)}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if user_agent:
        lines.append(f"User-Agent: {user_agent}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    loop = asyncio.get_running_loop()
    sock: LeanSocket | None = None
    try:
        async with asyncio.timeout(open_timeout):
            _, sock = await loop.create_connection(
                lambda: LeanSocket(request, key, on_text),
                uri.host,
                uri.port,
                ssl=_tls_context() if uri.secure else None,
                server_hostname=uri.host if uri.secure else None,
            )
            await sock.opened
    except BaseException as exc:
        if sock is not None and sock.transport is not None:
            sock.transport.abort()
        if isinstance(exc, TimeoutError):
            raise TimeoutError("timed out during opening handshake") from None
        raise
    return sock
