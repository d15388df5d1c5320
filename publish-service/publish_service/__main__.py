"""Entry point: `python -m publish_service`."""

from __future__ import annotations

import uvicorn

from offsync_shared import logs
from publish_service.app import create_app
from publish_service.settings import Settings


def main() -> None:
    settings = Settings()
    logs.configure("publish-service", settings.log_level)
    # timeout_graceful_shutdown: SIGTERM lets in-flight work finish before the lifespan closes.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
