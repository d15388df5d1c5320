"""Entry point: `python -m conflict_service`."""

from __future__ import annotations

from conflict_service.app import create_app
from conflict_service.settings import Settings
from offsync_shared.serve import serve


def main() -> None:
    settings = Settings()
    serve("conflict-service", create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
