"""Settings of conflict-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """Everything in CommonSettings; conflict-service-specific knobs go here."""

    @property
    def port(self) -> int:
        return self.conflict_port
