"""Settings of profile-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """Everything in CommonSettings; profile-service-specific knobs go here."""

    # Browser origins allowed to call the API cross-origin (comma-separated), e.g. where the field
    # app is served; empty: sync-service's port on 127.0.0.1, localhost and OFFSYNC_HOST.
    app_origins: str = ""

    @property
    def port(self) -> int:
        return self.profile_port

    def cors_origins(self) -> list[str]:
        """The field app signs in from sync-service's origin (/app/ there) with a bearer-token API:
        no cookies, so allowing that origin exposes nothing a token does not already grant."""
        if self.app_origins:
            return [o.strip().rstrip("/") for o in self.app_origins.split(",") if o.strip()]
        hosts = dict.fromkeys(["127.0.0.1", "localhost", self.host])
        return [f"http://{h}:{self.sync_port}" for h in hosts if h not in ("0.0.0.0", "::")]
