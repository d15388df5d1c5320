"""Entry point: `python -m sync_service`. SIGTERM first drains the gateway (devices are told to
reconnect elsewhere, awaited batch answers are delivered), then uvicorn shuts down."""

from __future__ import annotations

import asyncio
from types import FrameType
from typing import Any

import uvicorn

from offsync_shared import heap, logs
from offsync_shared.read_timeouts import with_read_timeouts
from offsync_shared.serve import QuietServer, inherited_sockets, warn_if_exposed
from sync_service.app import create_app
from sync_service.settings import Settings
from sync_service.ws_transport import LeanWebSocketProtocol


class DrainingServer(QuietServer):
    """uvicorn closes open websockets with 1012 on shutdown; drain ours with 1001 before that."""

    def __init__(self, config: uvicorn.Config, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain_timeout = drain_timeout
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway = getattr(self.config.app.state, "gateway", None) if hasattr(self.config.app, "state") else None
        loop = self._loop
        if gateway is None or loop is None or self._draining:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        # A signal handler runs between any two bytecodes of the loop's thread, so the drain
        # starts from the loop: begun here, it could land between a session's "no wake-up
        # pending" check and its parking, leaving that session asleep until uvicorn closed it
        # with 1012 after the drain timeout.
        loop.call_soon_threadsafe(self._drain, gateway, sig, frame)

    def _drain(self, gateway: Any, sig: int, frame: FrameType | None) -> None:
        gateway.begin_drain()

        async def finish() -> None:
            await gateway.drained(self.drain_timeout)
            super(DrainingServer, self).handle_exit(sig, frame)

        self._drain_task = asyncio.get_running_loop().create_task(finish())


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The server settings of the gateway (also used by the tests' in-process gateway)."""
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        http=with_read_timeouts(settings.http_header_timeout_s, settings.http_body_idle_timeout_s),
        ws=LeanWebSocketProtocol,  # what an idle device costs: see ws_transport.py
        # Until the device has authenticated, a frame may be no larger than a hello can be; the
        # gateway raises this to sync_hard_frame_bytes for the connection once the token checks out.
        ws_max_size=settings.sync_preauth_frame_bytes,
        ws_ping_interval=None,  # heartbeats are protocol frames (see docs/protocol.md)
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Config(app, **{**options, **overrides})


def build_server(settings: Settings) -> DrainingServer:
    return DrainingServer(uvicorn_config(create_app(settings), settings), settings.sync_drain_timeout_s)


def main() -> None:
    settings = Settings.from_env()
    logs.configure("sync-service", settings.log_level)
    warn_if_exposed(settings)
    server = build_server(settings)
    # Imports and the app are in place: freeze them, so the collector's full passes (which
    # would stall every device of this process) only ever traverse what came later.
    heap.settle()
    server.run(sockets=inherited_sockets(settings))


if __name__ == "__main__":
    main()
