"""RFC 6455 framing for the server end of a websocket once the handshake is done: a compact reader
of client frames and the framing of what the server sends. Pure: bytes in, events and bytes out.

The gateway holds thousands of idle sockets, and what each one costs is the figure that matters
(docs/performance.md, connections). ``websockets``' sans-I/O ``ServerProtocol`` kept ~1.7 KB per
connection for the life of the socket (the object, a ``StreamReader``, the parser's generators and
the upgrade request its frame still referenced); ``FrameReader`` keeps seven slots, which hold only
shared empty values while a device is idle. It reads what ``ServerProtocol`` read and fails the
connection with the same close codes, in the same order of checks: client frames must be masked
(1002), reserved bits zero (no extension is ever negotiated, 1002), opcodes known (1002), control
frames short and unfragmented (1002), fragments in sequence (1002), a message — counted over its
fragments so far, as ``websockets`` counts it — no larger than ``max_size`` (1009, decided from
the frame header before its payload is read), close frames well formed (1002; a reason that is not
UTF-8, 1007). Unlike ``ServerProtocol`` it also checks that a text message is UTF-8 (1007), which
the transport used to do after it.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

try:  # websockets' C helper; the same XOR in pure Python otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

# What ``FrameReader.feed`` reports, each event a ``(kind, value)`` pair.
TEXT: Final = 1  # a complete text message: value is its ``str``
BINARY: Final = 2  # a complete binary message: value is its ``bytes``
PING: Final = 9  # value: the payload to answer with a pong (``pong_frame``)
CLOSE: Final = 8  # the peer's close frame: value is a ``Close``; nothing is read after it
FAILED: Final = 0  # the peer broke the protocol: value is the ``Close`` to fail with; nothing after

NO_STATUS = 1005  # a close frame without a code (RFC 6455 7.1.5): never sent, only reported
# Close codes a peer may send (RFC 6455 7.4.1, IANA registry) besides 3000-4999: as websockets.
_PEER_CODES: Final = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
_NOTHING: Final = b""


class Close(NamedTuple):
    """A close frame's code and reason; ``payload``: the frame's bytes, echoed as they came."""

    code: int
    reason: str
    payload: bytes = _NOTHING


Event = tuple[int, "str | bytes | Close"]


def _failed(code: int, reason: str) -> Event:
    return (FAILED, Close(code, reason))


class FrameReader:
    """Turns the bytes a client sends into messages and control events (``feed``).

    While idle it holds no buffer: bytes of an incomplete frame are kept (as the chunks that
    came, joined only once the frame is whole, so a large frame arriving in many reads is copied
    once), and so are the fragments of a message in progress."""

    __slots__ = ("max_size", "_chunks", "_have", "_need", "_parts", "_size", "_text")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size  # the largest message (raised after authentication)
        self._chunks: list[bytes] | None = None  # an incomplete frame (None: nothing pending)
        self._have = 0  # bytes in _chunks
        self._need = 0  # bytes needed before parsing is worth trying again
        self._parts: list[bytes] | None = None  # fragments of a message in progress
        self._size = 0  # their bytes
        self._text = False  # that message is text
        # After a close frame or a failure the reader is done: ``_need`` is -1 and data is dropped.

    @property
    def done(self) -> bool:
        """A close frame was read or the peer failed the protocol: the rest is not read."""
        return self._need < 0

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``, in order (empty while a frame is incomplete). A
        ``CLOSE`` or ``FAILED`` event is the last one, ever."""
        need = self._need
        if need < 0:
            return []
        chunks = self._chunks
        if chunks is not None:
            chunks.append(data)
            self._have += len(data)
            if self._have < need:
                return []
            data = b"".join(chunks)
            self._chunks = None
        events: list[Event] = []
        n = len(data)
        pos = 0
        while n - pos >= 2:
            b1 = data[pos]
            b2 = data[pos + 1]
            length = b2 & 0x7F
            head = pos + 2
            if length >= 126:
                if length == 126:
                    if n - head < 2:
                        break
                    length = (data[head] << 8) | data[head + 1]
                    head += 2
                else:
                    if n - head < 8:
                        break
                    (length,) = struct.unpack_from("!Q", data, head)
                    head += 8
            op = b1 & 0x0F
            # The checks of websockets' Frame.parse and Frame.check, in their order.
            if op > OP_BINARY and not OP_CLOSE <= op <= OP_PONG:
                return self._fail(events, 1002, "invalid opcode")
            if not b2 & 0x80:
                return self._fail(events, 1002, "incorrect masking")
            parts = self._parts
            limit = self.max_size
            if parts is not None:  # what is left of the message's allowance, for any frame
                limit -= self._size
            if length > limit:
                if parts is None:
                    return self._fail(events, 1009, f"frame with {length} bytes exceeds limit of {limit} bytes")
                return self._fail(
                    events,
                    1009,
                    f"frame with {length} bytes after reading {self._size} bytes exceeds limit of {self.max_size} bytes",
                )
            if b1 & 0x70:
                return self._fail(events, 1002, "reserved bits must be 0")
            fin = b1 & 0x80
            if op >= OP_CLOSE:
                if length > 125:
                    return self._fail(events, 1002, "control frame too long")
                if not fin:
                    return self._fail(events, 1002, "fragmented control frame")
            end = head + 4 + length
            if end > n:
                break
            payload = apply_mask(data[head + 4 : end], data[head : head + 4]) if length else _NOTHING
            pos = end
            if op == OP_TEXT or op == OP_BINARY:
                if parts is not None:
                    return self._fail(events, 1002, "expected a continuation frame")
                if not fin:
                    self._parts = [payload]
                    self._size = length
                    self._text = op == OP_TEXT
                    continue
                if op == OP_BINARY:
                    events.append((BINARY, payload))
                    continue
                text = True
            elif op == OP_CONT:
                if parts is None:
                    return self._fail(events, 1002, "unexpected continuation frame")
                parts.append(payload)
                if not fin:
                    self._size += length
                    continue
                payload = b"".join(parts)
                self._parts = None
                self._size = 0
                text = self._text
                if not text:
                    events.append((BINARY, payload))
                    continue
            elif op == OP_PING:
                events.append((PING, payload))
                continue
            elif op == OP_PONG:
                continue  # unsolicited or not, a pong needs nothing (RFC 6455 5.5.3)
            else:  # OP_CLOSE
                return self._closed(events, payload)
            if text:
                try:
                    events.append((TEXT, payload.decode()))
                except UnicodeDecodeError:
                    return self._fail(events, 1007, "")
        if pos < n:
            rest = data[pos:] if pos else data
            self._chunks = [rest]
            self._have = len(rest)
            self._need = _frame_size(rest)
        else:
            self._have = self._need = 0
        return events

    def _closed(self, events: list[Event], payload: bytes) -> list[Event]:
        """The peer's close frame (RFC 6455 5.5.1), checked as websockets checks it."""
        if len(payload) == 1:
            return self._fail(events, 1002, "close frame too short")
        if payload:
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError as exc:
                return self._fail(events, 1007, f"{exc.reason} at position {exc.start}")
            code = (payload[0] << 8) | payload[1]
            if not (code in _PEER_CODES or 3000 <= code < 5000):
                return self._fail(events, 1002, "invalid status code")
        else:
            code, reason = NO_STATUS, ""
        if self._parts is not None:
            return self._fail(events, 1002, "incomplete fragmented message")
        self._stop()
        events.append((CLOSE, Close(code, reason, payload)))
        return events

    def _fail(self, events: list[Event], code: int, reason: str) -> list[Event]:
        self._stop()
        events.append(_failed(code, reason))
        return events

    def _stop(self) -> None:
        self._chunks = self._parts = None
        self._have = self._size = 0
        self._need = -1


def _frame_size(head: bytes) -> int:
    """How many bytes the frame starting ``head`` needs in all (or, while its header is short,
    how many it needs to tell)."""
    n = len(head)
    if n < 2:
        return 2
    length = head[1] & 0x7F
    if length < 126:
        return 6 + length
    if length == 126:
        return 8 if n < 4 else 8 + ((head[2] << 8) | head[3])
    return 14 if n < 10 else 14 + struct.unpack_from("!Q", head, 2)[0]


# ------------------------------------------------------------------------- what we send ---
def _frame(first: int, payload: bytes) -> bytes:
    """One server frame (RFC 6455 5.2: unmasked, no extensions)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    """One UTF-8 text message framed as a server sends it (FIN, unmasked, no extensions): the
    same bytes for every connection, so one framing serves them all."""
    return _frame(0x81, payload)


def binary_frame(payload: bytes) -> bytes:
    """One binary message framed as a server sends it."""
    return _frame(0x82, payload)


def prebuilt_text(texts: list[str] | tuple[str, ...]) -> bytes:
    """Text messages framed for the wire (``text_frame``), back to back."""
    return b"".join(text_frame(t.encode()) for t in texts)


def pong_frame(payload: bytes) -> bytes:
    """The answer to a ping: its payload back (RFC 6455 5.5.2)."""
    return _frame(0x8A, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason`` (at most 123 bytes of UTF-8: a control frame's
    payload is at most 125). ValueError for a code no endpoint may send, as websockets refused."""
    if not (code in _PEER_CODES or 3000 <= code < 5000):
        raise ValueError(f"invalid close code {code}")
    payload = struct.pack("!H", code) + reason.encode()
    if len(payload) > 125:
        raise ValueError("close reason too long")
    return _frame(0x88, payload)


def close_echo(close: Close) -> bytes:
    """The answer to the peer's close frame: its payload echoed, code and reason as they came
    (RFC 6455 5.5.1; an empty one stays empty)."""
    return _frame(0x88, close.payload)
