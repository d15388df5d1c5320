"""Runs a service's FastAPI app under uvicorn with JSON logs; SIGTERM lets in-flight requests
finish (graceful shutdown) before the lifespan closes the runtime in reverse order."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from offsync_shared import logs
from offsync_shared.settings import CommonSettings


def serve(service: str, app: FastAPI, settings: CommonSettings, port: int) -> None:
    logs.configure(service, settings.log_level)
    uvicorn.run(app, host=settings.host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10)
