"""Settings of publish-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """Everything in CommonSettings; publish-service-specific knobs go here."""

    @property
    def port(self) -> int:
        return self.publish_port
