"""SIGTERM's drain starts from the event loop, not inside the signal handler.

A Python signal handler runs between any two bytecodes of the loop's thread. Begun there, the
drain could wake a session in the middle of ``SyncSession.park``: after its "no wake-up pending"
check and before it registered its wake-up, so the wake-up was lost, the session slept through
the drain, and uvicorn closed its device with 1012 instead of 1001 once the drain timed out
(test_sync_processes.py saw it once in a loaded run)."""

from __future__ import annotations

import asyncio
import signal
from types import SimpleNamespace
from typing import Any

import uvicorn

from sync_service.__main__ import DrainingServer
from sync_service.session import Wakeup


class FakeGateway:
    """What the server calls on the gateway: begin the drain, then wait for it."""

    def __init__(self, session_signal: Wakeup) -> None:
        self.session_signal = session_signal
        self.begun = asyncio.Event()

    def begin_drain(self) -> None:
        self.session_signal.set()  # as Gateway.begin_drain does for each session
        self.begun.set()

    async def drained(self, timeout: float) -> bool:
        return True


class FakeApp:
    """An ASGI app with the gateway where the server looks for it (``app.state.gateway``)."""

    def __init__(self, gateway: FakeGateway) -> None:
        self.state = SimpleNamespace(gateway=gateway)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never served")


def server_for(gateway: FakeGateway) -> DrainingServer:
    server = DrainingServer(uvicorn.Config(FakeApp(gateway)), drain_timeout=5.0)
    server._loop = asyncio.get_running_loop()  # set by main_loop when serving
    return server


async def test_a_signal_between_a_sessions_check_and_its_parking_still_wakes_it() -> None:
    signal_ = Wakeup()
    gateway = FakeGateway(signal_)
    server = server_for(gateway)
    woke: list[str] = []

    assert not signal_.is_set()  # the session's check in park(): nothing pending
    server.handle_exit(signal.SIGTERM, None)  # the signal lands right here
    signal_.park(lambda: woke.append("turn"))  # ... and the session parks

    async with asyncio.timeout(5):
        await gateway.begun.wait()
    assert woke == ["turn"], "the drain's wake-up reached the parked session"
    assert server._drain_task is not None
    async with asyncio.timeout(5):
        await server._drain_task
    assert server.should_exit


async def test_a_second_signal_during_the_drain_shuts_down_at_once() -> None:
    gateway = FakeGateway(Wakeup())
    server = server_for(gateway)
    server.handle_exit(signal.SIGTERM, None)
    assert not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
