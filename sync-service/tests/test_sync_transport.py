"""The gateway's own websocket transport (ws_transport.py) over real sockets: what a client of
the plain websocket protocol sees — deflate declined, fragmented and binary frames, control
frames answered, non-websocket requests refused — and that it forgets what it no longer needs."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

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
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
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
            assert t._response is None  # the handshake answer is dropped once sent
            # ServerProtocol's parser keeps the upgrade request: its headers are emptied.
            request = t.conn.parser.gi_frame.f_locals.get("request")
            assert request is None or not list(request.headers.raw_items())
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
