"""The frame reader of the lean transport (ws_frames.py): table-driven cases for each rule of
RFC 6455 it enforces, and properties against websockets as the oracle — what its client framing
sends comes back as the same messages however the bytes are split, and on any stream of frames,
well formed or not, the reader reports what websockets' ``ServerProtocol`` (which the transport
used before) did, down to the close code of a failure."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from sync_service.ws_frames import (
    BINARY,
    CLOSE,
    FAILED,
    PING,
    TEXT,
    Close,
    Event,
    FrameReader,
    binary_frame,
    close_echo,
    close_frame,
    pong_frame,
    text_frame,
)

KEY = b"\x11\x22\x33\x44"


def raw(
    op: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True, key: bytes = KEY, length: int = -1
) -> bytes:
    """A client frame byte by byte, whatever its bits (websockets' encoder refuses bad ones)."""
    n = len(payload) if length < 0 else length
    b1 = (0x80 if fin else 0) | (rsv << 4) | op
    m = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b1, m | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b1, m | 126, n)
    else:
        head = struct.pack("!BBQ", b1, m | 127, n)
    if not masked:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def client(op: Opcode, payload: bytes, fin: bool = True) -> bytes:
    return Frame(op, payload, fin).serialize(mask=True)


def feed_all(reader: FrameReader, data: bytes, cuts: list[int] | None = None) -> list[Event]:
    events: list[Event] = []
    start = 0
    for cut in sorted(set(cuts or [])):
        if 0 < cut < len(data):
            events += reader.feed(data[start:cut])
            start = cut
    events += reader.feed(data[start:])
    return events


# ----------------------------------------------------------------------------- table ---
CASES: list[tuple[str, bytes, list[Event]]] = [
    ("text", raw(1, b"hi"), [(TEXT, "hi")]),
    ("binary", raw(2, b"\x00\xff"), [(BINARY, b"\x00\xff")]),
    ("empty text", raw(1, b""), [(TEXT, "")]),
    ("16-bit length", raw(1, b"a" * 300), [(TEXT, "a" * 300)]),
    ("fragments", raw(1, b"he", fin=False) + raw(0, b"l", fin=False) + raw(0, b"lo"), [(TEXT, "hello")]),
    (
        "ping between fragments",
        raw(2, b"a", fin=False) + raw(9, b"p") + raw(0, b"b"),
        [(PING, b"p"), (BINARY, b"ab")],
    ),
    ("pong ignored", raw(10, b"x") + raw(1, b"y"), [(TEXT, "y")]),
    ("utf-8 split across fragments", raw(1, b"\xc3", fin=False) + raw(0, b"\xa9"), [(TEXT, "é")]),
    ("close with code", raw(8, b"\x03\xe8bye"), [(CLOSE, Close(1000, "bye", b"\x03\xe8bye"))]),
    ("close without code", raw(8, b""), [(CLOSE, Close(1005, "", b""))]),
    ("private close code", raw(8, b"\x0f\xa1"), [(CLOSE, Close(4001, "", b"\x0f\xa1"))]),
    ("nothing after close", raw(8, b"") + raw(1, b"late"), [(CLOSE, Close(1005, "", b""))]),
    ("unmasked", raw(1, b"x", masked=False), [(FAILED, Close(1002, "incorrect masking"))]),
    ("reserved bit", raw(1, b"x", rsv=4), [(FAILED, Close(1002, "reserved bits must be 0"))]),
    ("unknown opcode", raw(3, b"x"), [(FAILED, Close(1002, "invalid opcode"))]),
    ("long ping", raw(9, b"x" * 126), [(FAILED, Close(1002, "control frame too long"))]),
    ("fragmented ping", raw(9, b"x", fin=False), [(FAILED, Close(1002, "fragmented control frame"))]),
    ("lone continuation", raw(0, b"x"), [(FAILED, Close(1002, "unexpected continuation frame"))]),
    (
        "new message inside one",
        raw(1, b"x", fin=False) + raw(1, b"y"),
        [(FAILED, Close(1002, "expected a continuation frame"))],
    ),
    ("close too short", raw(8, b"\x03"), [(FAILED, Close(1002, "close frame too short"))]),
    ("close code 1005", raw(8, b"\x03\xed"), [(FAILED, Close(1002, "invalid status code"))]),
    ("close code 999", raw(8, b"\x03\xe7"), [(FAILED, Close(1002, "invalid status code"))]),
    ("close reason not utf-8", raw(8, b"\x03\xe8\xff"), [(FAILED, Close(1007, "invalid start byte at position 0"))]),
    (
        "close inside a message",
        raw(1, b"x", fin=False) + raw(8, b""),
        [(FAILED, Close(1002, "incomplete fragmented message"))],
    ),
    ("text not utf-8", raw(1, b"\xff"), [(FAILED, Close(1007, ""))]),
    (
        "frame over the limit",
        raw(2, b"x" * 1001),
        [(FAILED, Close(1009, "frame with 1001 bytes exceeds limit of 1000 bytes"))],
    ),
    (
        "message over the limit",
        raw(2, b"x" * 600, fin=False) + raw(0, b"x" * 401),
        [(FAILED, Close(1009, "frame with 401 bytes after reading 600 bytes exceeds limit of 1000 bytes"))],
    ),
    (
        "good frames before a bad one",
        raw(1, b"a") + raw(1, b"b", masked=False),
        [(TEXT, "a"), (FAILED, Close(1002, "incorrect masking"))],
    ),
]


@pytest.mark.parametrize("data,expected", [(d, e) for _, d, e in CASES], ids=[c[0] for c in CASES])
def test_each_rule(data: bytes, expected: list[Event]) -> None:
    assert feed_all(FrameReader(1000), data) == expected
    one_by_one = FrameReader(1000)
    assert feed_all(one_by_one, data, list(range(len(data)))) == expected  # split at every byte


def test_an_oversized_frame_fails_from_its_header_before_its_payload() -> None:
    reader = FrameReader(1000)
    header = raw(2, b"", length=15 * 1024 * 1024)[:14]  # 64-bit length, mask key, no payload yet
    assert reader.feed(header[:5]) == []
    assert reader.feed(header[5:]) == [
        (FAILED, Close(1009, f"frame with {15 * 1024 * 1024} bytes exceeds limit of 1000 bytes"))
    ]
    assert reader.done and reader.feed(b"x" * 100) == []


def test_an_idle_reader_holds_nothing() -> None:
    reader = FrameReader(1 << 20)
    frame = raw(1, b"x" * 70000)
    assert reader.feed(frame[:1000]) == []
    assert reader._chunks is not None
    assert reader.feed(frame[1000:]) == [(TEXT, "x" * 70000)]
    assert reader._chunks is None and reader._parts is None and reader._have == reader._need == 0


def test_the_limit_can_be_raised() -> None:
    reader = FrameReader(10)
    reader.max_size = 1000
    assert reader.feed(raw(1, b"x" * 500)) == [(TEXT, "x" * 500)]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_server_frames_are_websockets_frames(size: int) -> None:
    payload = b"y" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)
    assert binary_frame(payload) == Frame(Opcode.BINARY, payload).serialize(mask=False)
    if size <= 125:
        assert pong_frame(payload) == Frame(Opcode.PONG, payload).serialize(mask=False)


def test_close_frames() -> None:
    assert close_frame(4001, "bad_hello: x") == Frame(Opcode.CLOSE, b"\x0f\xa1bad_hello: x").serialize(mask=False)
    assert close_frame(1000) == b"\x88\x02\x03\xe8"
    assert close_echo(Close(1005, "", b"")) == b"\x88\x00"
    for code in (1005, 1006, 999, 5000):
        with pytest.raises(ValueError):
            close_frame(code)
    with pytest.raises(ValueError):
        close_frame(1000, "x" * 124)


# ------------------------------------------------------------------------ properties ---
messages = st.lists(
    st.one_of(
        st.tuples(st.just(True), st.text(max_size=200)),
        st.tuples(st.just(False), st.binary(max_size=200)),
    ),
    max_size=6,
)


def _fragments(draw: Any, payload: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    out, start = [], 0
    for c in cuts:
        out.append(payload[start:c])
        start = c
    out.append(payload[start:])
    return out


@st.composite
def encoded_streams(draw: Any) -> tuple[bytes, list[Event], list[int]]:
    """Messages framed by websockets' client encoder (some fragmented, pings between), the
    events they must give, and where to split the bytes."""
    wire = b""
    expected: list[Event] = []
    for is_text, value in draw(messages):
        payload = value.encode() if is_text else value
        parts = _fragments(draw, payload)
        for i, part in enumerate(parts):
            op = (Opcode.TEXT if is_text else Opcode.BINARY) if i == 0 else Opcode.CONT
            wire += client(op, part, fin=i == len(parts) - 1)
            if draw(st.booleans()) and i < len(parts) - 1:
                wire += client(Opcode.PING, b"p%d" % i)
                expected.append((PING, b"p%d" % i))
        expected.append((TEXT, value) if is_text else (BINARY, value))
    if draw(st.booleans()):
        wire += client(Opcode.CLOSE, b"\x03\xe8done")
        expected.append((CLOSE, Close(1000, "done", b"\x03\xe8done")))
    cuts = draw(st.lists(st.integers(0, max(len(wire), 1)), max_size=8))
    return wire, expected, cuts


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(encoded_streams())
def test_round_trip_of_websockets_framing(case: tuple[bytes, list[Event], list[int]]) -> None:
    wire, expected, cuts = case
    assert feed_all(FrameReader(1 << 20), wire, cuts) == expected


def oracle(data: bytes, max_size: int) -> list[Event]:
    """What the transport got from websockets' ServerProtocol for the same bytes: its frames
    put together as the transport did (text decoded at the end: 1007 when it is not UTF-8)."""
    server = ServerProtocol(max_size=max_size)
    server.receive_data(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    (request,) = server.events_received()
    assert isinstance(request, Request)
    server.send_response(server.accept(request))
    assert server.state is State.OPEN
    server.data_to_send()
    server.receive_data(data)
    out: list[Event] = []
    parts: list[bytes] | None = None
    text = False
    for frame in server.events_received():
        if not isinstance(frame, Frame):
            continue
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            parts, text = [bytes(frame.data)], frame.opcode is Opcode.TEXT
        elif frame.opcode is Opcode.CONT:
            assert parts is not None
            parts.append(bytes(frame.data))
        elif frame.opcode is Opcode.PING:
            out.append((PING, bytes(frame.data)))
            continue
        elif frame.opcode is Opcode.CLOSE:
            rcvd = server.close_rcvd
            assert rcvd is not None
            out.append((CLOSE, Close(rcvd.code, rcvd.reason, bytes(frame.data))))
            return out
        else:
            continue
        if not frame.fin:
            continue
        assert parts is not None
        payload, parts = b"".join(parts), None
        if not text:
            out.append((BINARY, payload))
            continue
        try:
            out.append((TEXT, payload.decode()))
        except UnicodeDecodeError:
            out.append((FAILED, Close(1007, "")))
            return out
    if server.parser_exc is not None:
        sent = server.close_sent
        assert sent is not None
        out.append((FAILED, Close(sent.code, sent.reason)))
    return out


def _payload(draw: Any, op: int) -> bytes:
    if op == 8:
        code = draw(st.sampled_from([1000, 1001, 1005, 1006, 1011, 999, 2999, 3000, 4001, 4999, 5000]))
        reason = draw(st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=5)))
        return bytes(draw(st.sampled_from([b"", b"\x03", struct.pack("!H", code) + reason])))
    if op == 1:
        return bytes(draw(st.one_of(st.text(max_size=150).map(str.encode), st.binary(max_size=10))))
    n = draw(st.integers(0, 300))  # sizes spread evenly, so some pass the smaller limits
    return bytes(draw(st.binary(min_size=n, max_size=n)))


@st.composite
def any_frames(draw: Any) -> bytes:
    """Messages (fragmented or not, with control frames between fragments), now and then a
    frame with any opcode, bits, masking and payload: valid streams and every way to break one."""
    wire = b""
    for _ in range(draw(st.integers(1, 5))):
        key = draw(st.binary(min_size=4, max_size=4))
        if draw(st.integers(0, 9)) == 9:  # anything at all
            op = draw(st.sampled_from([0, 1, 2, 3, 7, 8, 9, 10, 11, 15]))
            fin, rsv, masked = draw(st.booleans()), draw(st.sampled_from([0, 0, 1, 2, 4])), draw(st.booleans())
            wire += raw(op, _payload(draw, op), fin=fin, rsv=rsv, masked=masked, key=key)
            continue
        op = draw(st.sampled_from([1, 1, 2, 8, 9, 10]))
        payload = _payload(draw, op)
        if op >= 8:
            wire += raw(op, payload, key=key)
            continue
        pieces = _fragments(draw, payload)
        for i, piece in enumerate(pieces):
            wire += raw(op if i == 0 else 0, piece, fin=i == len(pieces) - 1, key=key)
            if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
                control = draw(st.sampled_from([8, 9, 10]))
                wire += raw(control, _payload(draw, control)[:125], key=key)
    return wire


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(any_frames(), st.sampled_from([60, 200, 1 << 20]), st.lists(st.integers(0, 2000), max_size=5))
def test_same_verdict_as_websockets(data: bytes, max_size: int, cuts: list[int]) -> None:
    expected = oracle(data, max_size)
    assert feed_all(FrameReader(max_size), data, cuts) == expected
