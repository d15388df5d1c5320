"""A bare protocol client for the security tests: raw frames over a real websocket, so a test
can send what no SDK would."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from offsync_shared import protocol as p


async def open_session(url: str, token: str, device_id: str) -> ClientConnection:
    """Connect, say hello, and return once welcomed."""
    ws = await connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None, open_timeout=15, max_size=None
    )
    await ws.send(p.encode(p.Hello(device_id=device_id)).decode())
    await until(ws, lambda f: isinstance(f, p.Welcome))
    return ws


async def until(ws: ClientConnection, want: Any, timeout: float = 15.0) -> Any:
    """The first server frame for which ``want(frame)`` holds (earlier frames are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = p.decode_server(await ws.recv())
            if want(frame):
                return frame


async def answers_ping(ws: ClientConnection, t: float = 42.0) -> bool:
    await ws.send(p.encode(p.Ping(t=t)).decode())
    pong = await until(ws, lambda f: isinstance(f, p.Pong) and f.t == t)
    return pong is not None


async def closed_with(ws: ClientConnection, timeout: float = 15.0) -> int | None:
    """Read until the server closes; its close code."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_code
