"""Entry point: `python -m profile_service`."""

from __future__ import annotations

from offsync_shared.serve import serve
from profile_service.app import create_app
from profile_service.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    serve("profile-service", create_app(settings), settings, settings.port)


if __name__ == "__main__":
    main()
