"""The gateway's own websocket transport (ws_transport.py) over real sockets: what a client of
the plain websocket protocol sees — deflate declined, fragmented and binary frames, control
frames answered, close handshakes, protocol violations failed with their close codes, bad
upgrade requests and non-websocket requests refused — and that it forgets what it no longer
needs."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import struct
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.server import ServerProtocol

from offsync_shared import protocol as p
from offsync_stack.testing import eventually
from sync_service.ws_transport import LeanWebSocketProtocol

pytestmark = pytest.mark.e2e


def hello(device: str) -> bytes:
    return p.encode(p.Hello(device_id=device))


async def welcomed(ws: Any) -> p.Welcome:
    frame = p.decode_server(await ws.recv())
    assert isinstance(frame, p.Welcome), frame
    return frame


async def test_deflate_is_declined_and_frames_of_every_shape_are_read(gw: Any) -> None:
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    headers = {"Authorization": f"Bearer {gw.token(user)}"}
    async with connect(gw.url, additional_headers=headers, compression="deflate", ping_interval=None) as ws:
        # No permessage-deflate: its zlib state would cost more than an idle device does.
        assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(hello(str(uuid.uuid4())))  # binary frame
        await welcomed(ws)
        await ws.send(iter(['{"type":"ping",', '"t":7}']))  # one text message in two fragments
        while True:
            frame = p.decode_server(await ws.recv())
            if isinstance(frame, p.Pong):
                assert frame.t == 7
                break
        pong_waiter = await ws.ping(b"x")  # a websocket-level ping is answered by the transport
        await pong_waiter


async def test_plain_http_on_the_sync_path_is_refused(gw: Any) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        r = await client.get(gw.url.replace("ws://", "http://"))
    assert r.status_code >= 400


async def test_idle_connection_keeps_no_handshake_state(gw: Any) -> None:
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    await gw.put(f"b-{user}", "account", {f"idle-{i}": {"n": i} for i in range(3)})
    headers = {"Authorization": f"Bearer {gw.token(user)}"}
    async with connect(gw.url, additional_headers=headers, compression=None, ping_interval=None) as ws:
        hi = p.Hello(device_id=str(uuid.uuid4()), features=(p.FEATURE_OPS_CHECKPOINT,))
        await ws.send(p.encode(hi))
        await welcomed(ws)
        while True:  # the download ends with one ops frame carrying its checkpoint
            first = p.decode_server(await ws.recv())
            if isinstance(first, p.Ops) and first.checkpoint is not None:
                break
        del first
        await eventually(lambda: _session_idle(gw), timeout=10, message="session idle")
        gc.collect()
        # Nothing keeps the last frame sent (a whole page of ops) while the device is idle.
        assert not [o for o in gc.get_objects() if type(o) is p.Ops]
        open_ = [o for o in gc.get_objects() if type(o) is LeanWebSocketProtocol and not o._disconnected]
        assert open_, "the gateway serves websockets with its own transport"
        for t in open_:
            assert t._accept_key is None  # nothing of the handshake is kept once answered
            reader = t._reader
            assert reader is not None  # and the frame reader of an idle device holds nothing
            assert reader._chunks is None and reader._parts is None and reader._have == reader._need == 0
        assert not [o for o in gc.get_objects() if isinstance(o, ServerProtocol)]  # (the client's is a ClientProtocol)
        # No task at all for an idle device: frames reach the session from the transport's
        # read callback, its turns run in tasks started on a wake-up, and the ASGI call (with
        # its Starlette WebSocket and scope) has returned, leaving the connection to the gateway.
        await eventually(lambda: _session_running(gw), timeout=10, message="session running")
        await eventually(lambda: _no_connection_tasks(), timeout=10, message="no task for the idle device")
        assert not [o for o in gc.get_objects() if type(o) is WebSocket]
        await ws.send(p.encode(p.Ping(t=3)))  # and frames still arrive
        while True:
            frame = p.decode_server(await ws.recv())
            if isinstance(frame, p.Pong):
                assert frame.t == 3
                break


async def _no_connection_tasks() -> bool:
    names = ("Gateway._read", "Gateway._turns", "_run_asgi", "SyncSession")
    return not [t for t in asyncio.all_tasks() if any(n in repr(t.get_coro()) for n in names)]


async def _session_running(gw: Any) -> bool:
    return bool(gw.gateway.sessions)


async def _session_idle(gw: Any) -> bool:
    return bool(gw.gateway.sessions) and all(not s._busy for s in gw.gateway.sessions)


# ------------------------------------------------------------- raw frames on a raw socket ---
async def _raw_open(gw: Any, extra: str = "", version: str = "13") -> tuple[asyncio.StreamReader, Any, bytes]:
    """Opens a TCP connection and sends an upgrade request by hand; the reader, the writer and
    the answer's head."""
    u = urlsplit(gw.url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {u.path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
            f"Authorization: Bearer {gw.token(await gw.user())}\r\n{extra}\r\n"
        ).encode()
    )
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


def _client_frame(first: int, payload: bytes, masked: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = (
        struct.pack("!BB", first, (0x80 if masked else 0) | n)
        if n < 126
        else struct.pack("!BBH", first, 0xFE if masked else 0x7E, n)
    )
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _server_frames(reader: asyncio.StreamReader) -> list[tuple[int, bytes]]:
    """The frames the server sends until it closes the connection."""
    frames: list[tuple[int, bytes]] = []
    async with asyncio.timeout(10):
        while True:
            try:
                b1, b2 = await reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return frames
            n = b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            frames.append((b1, await reader.readexactly(n)))


def _close_code(frames: list[tuple[int, bytes]]) -> int | None:
    closes = [payload for first, payload in frames if first == 0x88]
    return struct.unpack("!H", closes[-1][:2])[0] if closes and len(closes[-1]) >= 2 else None


async def test_the_101_and_a_clients_close_echoed(gw: Any) -> None:
    reader, writer, head = await _raw_open(gw)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
    assert b"\r\nSec-WebSocket-Accept: " in head and b"\r\nserver: uvicorn\r\n" in head
    writer.write(_client_frame(0x81, p.encode(p.Hello(device_id=str(uuid.uuid4())))))
    writer.write(_client_frame(0x89, b"are you there"))  # answered at once, before the welcome is read
    writer.write(_client_frame(0x88, struct.pack("!H", 4000) + b"bye"))
    frames = await _server_frames(reader)
    assert (0x8A, b"are you there") in frames
    assert frames[-1] == (0x88, struct.pack("!H", 4000) + b"bye")  # the close, echoed; then EOF
    writer.close()


@pytest.mark.parametrize(
    "frame,code",
    [
        (_client_frame(0x81, b"{}", masked=False), 1002),  # a client's frames must be masked
        (_client_frame(0x91, b"{}"), 1002),  # no extension: reserved bits must be 0
        (_client_frame(0x83, b"{}"), 1002),  # unknown opcode
        (_client_frame(0x80, b"{}"), 1002),  # a continuation of nothing
        (_client_frame(0x81, b"\xff\xfe"), 1007),  # text that is not UTF-8
        # Over the pre-authentication cap: refused from the header, before any payload is sent.
        (bytes([0x82, 0xFF]) + (70000).to_bytes(8, "big") + b"\0\0\0\0", 1009),
    ],
    ids=["unmasked", "reserved bit", "opcode", "continuation", "utf-8", "too big"],
)
async def test_protocol_violations_fail_with_their_close_code(gw: Any, frame: bytes, code: int) -> None:
    reader, writer, head = await _raw_open(gw)
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(frame)
    assert _close_code(await _server_frames(reader)) == code
    writer.close()


async def test_a_bad_upgrade_request_gets_websockets_answer(gw: Any) -> None:
    reader, writer, head = await _raw_open(gw, version="8")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
    async with asyncio.timeout(10):
        body = await reader.read()
    assert body == b"Failed to open a WebSocket connection: invalid Sec-WebSocket-Version header: 8.\n"
    writer.close()
