"""QuietServer: uvicorn without its 100 ms wake-ups. It still serves with a Date header, and a
shutdown wakes it at once, not at its next tick (the tick is an hour here: a stop that waited for
it would run into the test's deadline)."""

from __future__ import annotations

import asyncio
import signal
import socket
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import uvicorn

from offsync_shared.serve import QuietServer
from offsync_stack.testing import eventually


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_it_serves_and_a_shutdown_wakes_it_before_its_next_tick() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = QuietServer(uvicorn.Config(_app, log_config=None, lifespan="off"))
    server.tick_s = 3600.0
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _true(server.started), timeout=10, message="the server started")
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/")
        assert r.text == "ok"
        assert parsedate_to_datetime(r.headers["date"]).tzinfo is not None
        # SIGWINCH: uvicorn re-raises the signals it handled once it stopped, and this one's
        # default action is to ignore it (SIGTERM would end the test run).
        server.handle_exit(signal.SIGWINCH, None)
        async with asyncio.timeout(10):
            await serving
    finally:
        serving.cancel()
        sock.close()


async def _true(value: bool) -> bool:
    return value
