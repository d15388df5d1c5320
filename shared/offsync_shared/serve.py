"""Runs a service's FastAPI app under uvicorn with JSON logs; SIGTERM lets in-flight requests
finish (graceful shutdown) before the lifespan closes the runtime in reverse order. Slow clients
are cut off (read_timeouts), and a stack exposed with the dev secret is shouted about."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI

from offsync_shared import logs
from offsync_shared.read_timeouts import with_read_timeouts
from offsync_shared.settings import CommonSettings

log = logging.getLogger(__name__)


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
    uvicorn.Server(config).run(sockets=inherited_sockets(settings))
