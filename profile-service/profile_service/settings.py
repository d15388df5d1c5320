"""Settings of profile-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """Everything in CommonSettings plus where the console finds the other services."""

    # The records API (conflict-service): the console's sync-error and conflict pages call it.
    records_url: str = ""
    # sync-service's HTTP address: the console's live figures read its /metrics.
    sync_url: str = ""
    # publish-service's HTTP address: the live figures' publish lag comes from its /metrics.
    publish_url: str = ""

    @property
    def port(self) -> int:
        return self.profile_port

    def records_base(self) -> str:
        return self.records_url or f"http://{self.host}:{self.conflict_port}"

    def sync_base(self) -> str:
        return self.sync_url or f"http://{self.host}:{self.sync_port}"

    def publish_base(self) -> str:
        return self.publish_url or f"http://{self.host}:{self.publish_port}"
