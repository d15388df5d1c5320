"""Entry point: `python -m conflict_service`."""

from __future__ import annotations

from conflict_service.app import create_app
from conflict_service.settings import Settings
from offsync_shared import heap
from offsync_shared.serve import serve


def main() -> None:
    settings = Settings.from_env()
    # A poll of an upload storm keeps tens of thousands of objects alive until its commit (the
    # changes, decisions, rows and events): with the default thresholds young collections
    # promote them over and over and full passes walk them. Rarer young collections, as in
    # sync-service; the start-up heap is frozen once the runtime is up.
    heap.settle()
    serve("conflict-service", create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
