"""Settings of profile-service (env: OFFSYNC_...)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from offsync_shared.settings import CommonSettings
from profile_service.oidc import OidcConfig
from profile_service.sessions import Lifetimes
from profile_service.throttle import LoginLimits


class Settings(CommonSettings):
    """Everything in CommonSettings plus sign-in (docs/identity.md) and where the console finds
    the other services (docs/console.md)."""

    # The records API (conflict-service): the console's sync-error and conflict pages call it.
    records_url: str = ""
    # sync-service's HTTP address: the console's live figures read its /metrics.
    sync_url: str = ""
    # publish-service's HTTP address: the live figures' publish lag comes from its /metrics.
    publish_url: str = ""
    # Access tokens are short-lived so that a revocation reaches a token already handed out.
    access_token_ttl_s: int = 900
    # A refresh token unused this long expires; each refresh starts a new period.
    refresh_token_ttl_s: int = 30 * 24 * 3600
    login_max_failures_per_user: int = 5
    login_max_failures_per_address: int = 50
    login_window_s: float = 300.0
    # The bootstrap administrator's sign-in; the password is set only while the admin has none
    # (``make up`` generates one and prints it). Without it the admin signs in with minted tokens.
    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: str | None = None
    # The device websocket as devices reach it (behind a proxy, say); GET /v1/auth/config
    # answers it. Empty: this host's sync port.
    public_sync_url: str = ""
    # An external OpenID Connect provider whose access tokens POST /v1/auth/oidc exchanges for
    # Offsync tokens (docs/identity.md). Empty issuer: no provider is trusted.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_user_claim: str = "preferred_username"
    oidc_maps_to: Literal["username", "id"] = "username"
    oidc_leeway_s: float = 60.0
    oidc_jwks_min_refetch_s: float = 30.0
    oidc_jwks_ttl_s: float = 300.0

    def oidc_config(self) -> OidcConfig | None:
        if not self.oidc_issuer:
            return None
        return OidcConfig(
            issuer=self.oidc_issuer,
            audience=self.oidc_audience,
            jwks_url=self.oidc_jwks_url,
            user_claim=self.oidc_user_claim,
            maps_to=self.oidc_maps_to,
            leeway_s=self.oidc_leeway_s,
            min_refetch_s=self.oidc_jwks_min_refetch_s,
            ttl_s=self.oidc_jwks_ttl_s,
        )

    @model_validator(mode="after")
    def _oidc_needs_an_audience(self) -> Settings:
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError(
                "OFFSYNC_OIDC_AUDIENCE must be set with OFFSYNC_OIDC_ISSUER (tokens for other apps must not pass)"
            )
        return self

    # Browser origins allowed to call the API cross-origin (comma-separated), e.g. where the field
    # app is served; empty: sync-service's port on 127.0.0.1, localhost and OFFSYNC_HOST.
    app_origins: str = ""

    @property
    def port(self) -> int:
        return self.profile_port

    def records_base(self) -> str:
        return self.records_url or f"http://{self.host}:{self.conflict_port}"

    def sync_base(self) -> str:
        return self.sync_url or f"http://{self.host}:{self.sync_port}"

    def publish_base(self) -> str:
        return self.publish_url or f"http://{self.host}:{self.publish_port}"

    def cors_origins(self) -> list[str]:
        """The field app signs in from sync-service's origin (/app/ there) with a bearer-token API:
        no cookies, so allowing that origin exposes nothing a token does not already grant."""
        if self.app_origins:
            return [o.strip().rstrip("/") for o in self.app_origins.split(",") if o.strip()]
        hosts = dict.fromkeys(["127.0.0.1", "localhost", self.host])
        return [f"http://{h}:{self.sync_port}" for h in hosts if h not in ("0.0.0.0", "::")]

    def token_lifetimes(self) -> Lifetimes:
        return Lifetimes(access_s=self.access_token_ttl_s, refresh_s=self.refresh_token_ttl_s)

    def login_limits(self) -> LoginLimits:
        return LoginLimits(
            per_user=self.login_max_failures_per_user,
            per_address=self.login_max_failures_per_address,
            window_s=self.login_window_s,
        )
