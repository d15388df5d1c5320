"""Runs a service's FastAPI app under uvicorn with JSON logs; SIGTERM lets in-flight requests
finish (graceful shutdown) before the lifespan closes the runtime in reverse order. Slow clients
are cut off (read_timeouts), and a stack exposed with the dev secret is shouted about."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from offsync_shared import logs
from offsync_shared.read_timeouts import with_read_timeouts
from offsync_shared.settings import CommonSettings

log = logging.getLogger(__name__)


class QuietServer(uvicorn.Server):
    """uvicorn's main loop wakes every 100 ms to look for a shutdown, for ever: at rest that was 10
    of a service's ~24 wake-ups a second, each a few hundred µs of CPU on this virtual machine
    (docs/performance.md, "Idle CPU"). This one ticks once a second, the resolution of the Date
    header uvicorn's tick refreshes, and a shutdown signal wakes it at once."""

    tick_s = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, once it runs
        self._exit_now = asyncio.Event()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            # uvicorn's own ticks count tenths of a second and refresh the Date header on every
            # tenth; each of ours is a whole second, so it counts ten.
            counter = (counter + 10) % 864000
            try:
                async with asyncio.timeout(self.tick_s):
                    await self._exit_now.wait()
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:
            # A signal handler runs between any two bytecodes of the loop's thread: hand over.
            self._loop.call_soon_threadsafe(self._exit_now.set)


def warn_if_exposed(settings: CommonSettings) -> None:
    """Log (and print to stderr, where an operator looks first) the dev-secret exposure warning."""
    warning = settings.exposure_warning()
    if warning is not None:
        log.error(warning, extra={"security": "dev_secret_exposed"})
        print(f"\n*** SECURITY WARNING ***\n{warning}\n", file=sys.stderr, flush=True)


def inherited_sockets(settings: CommonSettings) -> list[socket.socket] | None:
    """The listening socket the starting process passed (``OFFSYNC_LISTEN_FD``), else None: uvicorn
    binds host and port itself. Not uvicorn's own ``fd`` option: it takes the descriptor for a
    UNIX socket, and asyncio then leaves Nagle's algorithm on for the TCP connections accepted."""
    if settings.listen_fd is None:
        return None
    try:
        return [socket.socket(fileno=settings.listen_fd)]  # family and type read from the descriptor
    except OSError as exc:
        raise SystemExit(f"OFFSYNC_LISTEN_FD={settings.listen_fd} is not an open socket: {exc.strerror}") from None


def serve(service: str, app: FastAPI, settings: CommonSettings, port: int) -> None:
    logs.configure(service, settings.log_level)
    warn_if_exposed(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        http=with_read_timeouts(settings.http_header_timeout_s, settings.http_body_idle_timeout_s),
    )
    QuietServer(config).run(sockets=inherited_sockets(settings))
