"""The lean transport (ws_transport.py) under a real uvicorn, over real sockets, with a small ASGI
app instead of the gateway: what both ends see of messages of every shape, the size cap before
and after ``authenticated``, close handshakes started by either end (codes and reasons both
ways), and a refused or failed app before the handshake answer. No database or broker needed."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from offsync_shared.read_timeouts import with_read_timeouts
from offsync_stack.embedded import free_port
from offsync_stack.testing import eventually
from sync_service.ws_transport import LEAN_EXTENSION, LeanWebSocketProtocol

PREAUTH = 1024


class CountedH11(with_read_timeouts(10, 30)):  # type: ignore[misc]
    """The HTTP protocol the services run, each instance remembered weakly (freed or not)."""

    made: list[weakref.ref[Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        CountedH11.made.append(weakref.ref(self))


class App:
    """``/echo``: sends each message back (``close:<code>`` closes with that code instead), the
    cap left as it was; ``/auth``: the same, the cap lifted on the first message; ``/refuse``
    closes before accepting; ``/boom`` fails before accepting. Disconnect events are recorded."""

    def __init__(self) -> None:
        self.disconnects: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        path = scope["path"]
        if path == "/refuse":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path == "/boom":
            raise RuntimeError("the app failed")
        await send({"type": "websocket.accept", "headers": [(b"x-app", b"yes")]})
        lean = scope["extensions"][LEAN_EXTENSION]
        first = True
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message)
                return
            if first:  # until then the transport reads nothing after the first message
                lean.authenticated(1 << 20 if path == "/auth" else PREAUTH)
            first = False
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
                continue
            await send(
                {"type": "websocket.send", **({"text": text} if text is not None else {"bytes": message["bytes"]})}
            )


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, App]]:
    app = App()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_config=None,
        lifespan="off",
        http=CountedH11,
        ws=LeanWebSocketProtocol,
        ws_max_size=PREAUTH,
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), timeout=10, message="server started")
    try:
        yield f"ws://127.0.0.1:{config.port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def test_messages_of_every_shape_and_pings(served: tuple[str, App]) -> None:
    url, _ = served
    async with connect(url + "/echo", ping_interval=None, compression=None) as ws:
        assert ws.response is not None and ws.response.headers["x-app"] == "yes"
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        await ws.send(iter(["frag", "ment", "ed ✓"]))  # one text message in three frames
        assert await ws.recv() == "fragmented ✓"
        await ws.send(iter([b"a", b"b"]))
        assert await ws.recv() == b"ab"
        await ws.send("")
        assert await ws.recv() == ""
        await (await ws.ping(b"x"))  # answered by the transport


async def test_the_cap_before_and_after_authentication(served: tuple[str, App]) -> None:
    url, app = served
    async with connect(url + "/echo", ping_interval=None, max_size=None) as ws:
        await ws.send("x" * (PREAUTH + 1))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1009
    await eventually(lambda: _disconnected(app, 1009), timeout=5, message="the app told")
    async with connect(url + "/auth", ping_interval=None, max_size=None) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send("y" * 200_000)  # after authenticated(): far beyond the pre-auth cap
        assert await ws.recv() == "y" * 200_000


async def test_close_handshakes_both_ways(served: tuple[str, App]) -> None:
    url, app = served
    async with connect(url + "/echo", ping_interval=None) as ws:
        await ws.send("close:4001")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4001, "bye")
    async with connect(url + "/echo", ping_interval=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await ws.close(4000, "see you")
        assert (ws.close_code, ws.close_reason) == (4000, "see you")  # echoed by the server
    await eventually(lambda: _disconnected(app, 4000, "see you"), timeout=5, message="the app told")


@pytest.mark.parametrize("path,status", [("/refuse", 403), ("/boom", 500)])
async def test_no_handshake_answer_but_an_http_error(served: tuple[str, App], path: str, status: int) -> None:
    url, _ = served
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url + path, ping_interval=None):
            pass
    assert refused.value.response.status_code == status


async def _disconnected(app: App, code: int, reason: str | None = None) -> bool:
    return any(d["code"] == code and (reason is None or d.get("reason") == reason) for d in app.disconnects)


async def test_connections_leave_no_reference_cycles(served: tuple[str, App]) -> None:
    """An upgraded connection's HTTP protocol, and a closed HTTP connection's, are freed by
    reference counting alone: a cycle would keep each (h11 state, buffers, flow control) until a
    full collection, and a storm of upgrades left thousands of them pinning the allocator's
    pools (docs/performance.md, connections)."""
    url, _ = served
    host, port = url.removeprefix("ws://").split(":")
    CountedH11.made.clear()
    gc.collect()
    gc.disable()
    try:
        async with connect(url + "/echo", ping_interval=None) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            assert len(CountedH11.made) == 1
            await eventually(lambda: _all_freed(), timeout=5, message="the upgraded HTTP protocol freed")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 500")  # the app answers no HTTP
        writer.close()
        assert len(CountedH11.made) == 2
        await eventually(lambda: _all_freed(), timeout=5, message="the closed HTTP connection's protocol freed")
    finally:
        gc.enable()


async def _all_freed() -> bool:
    return all(ref() is None for ref in CountedH11.made)
