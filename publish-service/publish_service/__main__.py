"""Entry point: `python -m publish_service`."""

from __future__ import annotations

from offsync_shared.serve import serve
from publish_service.app import create_app
from publish_service.settings import Settings


def main() -> None:
    settings = Settings()
    serve("publish-service", create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
