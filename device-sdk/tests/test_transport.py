"""The device's websocket tap against a real websockets server: whole and fragmented text
messages reach the callback in order, as they are read; binary ones still queue for recv()."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from offsync_device.transport import tapped


async def test_text_messages_whole_and_fragmented_reach_the_callback_in_order() -> None:
    async def server(ws: ServerConnection) -> None:
        await ws.send('{"n": 1}')
        await ws.send(['{"n": ', "2, ", '"s": "é"}'])  # one message in three frames
        await ws.send(b"\x00binary")
        await ws.send('{"n": 3}')
        await ws.wait_closed()

    got: list[bytes] = []
    three = asyncio.get_running_loop().create_future()

    def on_text(raw: bytes | bytearray | memoryview) -> None:
        got.append(bytes(raw))
        if len(got) == 3:
            three.set_result(None)

    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", create_connection=tapped(on_text)) as ws:  # type: ignore[arg-type]
            await asyncio.wait_for(three, 10)
            assert await asyncio.wait_for(ws.recv(), 10) == b"\x00binary"
    assert got == [b'{"n": 1}', '{"n": 2, "s": "é"}'.encode(), b'{"n": 3}']
