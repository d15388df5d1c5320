"""The device's lean websocket client against a real websockets server: the handshake (headers
sent, refusals and non-websocket answers reported as websockets reports them), text messages in
order whole or fragmented, binary ones ignored, pings answered, large frames both ways, and the
closing handshake from either side with websockets' close_code / close_reason meaning."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from offsync_device import lean_socket


class Got:
    def __init__(self, n: int) -> None:
        self.items: list[bytes] = []
        self.n = n
        self.done = asyncio.get_running_loop().create_future()

    def __call__(self, raw: bytes) -> None:
        self.items.append(bytes(raw))
        if len(self.items) == self.n and not self.done.done():
            self.done.set_result(None)


async def test_messages_in_order_binary_ignored_headers_sent() -> None:
    seen: dict[str, str] = {}

    async def server(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["auth"] = ws.request.headers["Authorization"]
        await ws.send('{"n": 1}')
        await ws.send(['{"n": ', "2, ", '"s": "é"}'])  # one message in three frames
        await ws.send(b"\x00binary")
        await ws.send([b"\x00frag", b"mented"])
        await ws.send('{"n": 3}')
        await ws.send("x" * 70_000)  # 16-bit length is not enough: 64-bit length
        await ws.send("y" * 300)  # 16-bit length
        assert await ws.recv() == "z" * 80_000
        await ws.wait_closed()

    got = Got(5)
    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        ws = await lean_socket.connect(f"ws://127.0.0.1:{port}/v1/sync", got, headers={"Authorization": "Bearer t"})
        await asyncio.wait_for(got.done, 10)
        await ws.send("z" * 80_000)
        await ws.close()
        assert ws.close_code == 1000 and ws.close_reason == ""
    assert seen["auth"] == "Bearer t"
    assert got.items == [
        b'{"n": 1}',
        '{"n": 2, "s": "é"}'.encode(),
        b'{"n": 3}',
        b"x" * 70_000,
        b"y" * 300,
    ]


async def test_server_close_code_and_reason_then_send_raises() -> None:
    async def server(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.close(4001, "unauthenticated: token expired")

    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        ws = await lean_socket.connect(f"ws://127.0.0.1:{port}", Got(1))
        assert ws.close_code is None
        await ws.send("hello")
        await asyncio.wait_for(asyncio.shield(ws.lost), 10)
        await ws.close()
        assert (ws.close_code, ws.close_reason) == (4001, "unauthenticated: token expired")  # type: ignore[comparison-overlap]  # set by the close
        with pytest.raises(ConnectionClosed):
            await ws.send("more")


async def test_pings_are_answered() -> None:
    async def server(ws: ServerConnection) -> None:
        waiter = await ws.ping(b"abc")
        await asyncio.wait_for(waiter, 5)
        await ws.send("ponged")
        await ws.wait_closed()

    got = Got(1)
    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        ws = await lean_socket.connect(f"ws://127.0.0.1:{port}", got)
        await asyncio.wait_for(got.done, 10)
        await ws.close()
    assert got.items == [b"ponged"]


async def test_client_close_reaches_the_server() -> None:
    closed: asyncio.Future[tuple[int | None, str | None]] = asyncio.get_running_loop().create_future()

    async def server(ws: ServerConnection) -> None:
        await ws.wait_closed()
        closed.set_result((ws.close_code, ws.close_reason))

    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        ws = await lean_socket.connect(f"ws://127.0.0.1:{port}", Got(1))
        await ws.close()
        assert await asyncio.wait_for(closed, 10) == (1000, "")


async def test_refused_upgrade_is_invalid_status() -> None:
    def refuse(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(HTTPStatus.FORBIDDEN, "no\n")

    async def server(ws: ServerConnection) -> None:
        raise AssertionError("not reached")

    async with serve(server, "127.0.0.1", 0, process_request=refuse) as srv:
        port = srv.sockets[0].getsockname()[1]
        with pytest.raises(InvalidStatus) as err:
            await lean_socket.connect(f"ws://127.0.0.1:{port}", Got(1))
        assert err.value.response.status_code == 403


async def test_a_server_that_does_not_speak_websocket() -> None:
    async def http_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    srv = await asyncio.start_server(http_only, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(InvalidHandshake, match="Accept"):
            await lean_socket.connect(f"ws://127.0.0.1:{port}", Got(1))
    finally:
        srv.close()


async def test_nothing_listening_is_an_os_error() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(OSError):
        await lean_socket.connect(f"ws://127.0.0.1:{port}", Got(1))


def test_proxies_and_credentials_are_left_to_websockets() -> None:
    assert lean_socket.supports("ws://127.0.0.1:8300/v1/sync", None)
    assert lean_socket.supports("wss://sync.example.com/v1/sync", None)
    assert not lean_socket.supports("ws://127.0.0.1:8300/v1/sync", "http://proxy:3128")
    assert not lean_socket.supports("ws://user:pw@127.0.0.1:8300/v1/sync", None)
    assert not lean_socket.supports("http://127.0.0.1:8300/v1/sync", None)
