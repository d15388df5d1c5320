"""Entry point: `python -m publish_service`."""

from __future__ import annotations

from offsync_shared import heap
from offsync_shared.serve import serve
from publish_service.app import create_app
from publish_service.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    # A poll's records (up to 500 events, their states, ops and index rows) stay alive until its
    # commit: rarer young collections, as in sync-service and conflict-service, so they are not
    # promoted and walked again and again (the registry is frozen whenever it is loaded).
    heap.settle()
    serve("publish-service", create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
