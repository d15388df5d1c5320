"""Settings of profile-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings
from profile_service.sessions import Lifetimes
from profile_service.throttle import LoginLimits


class Settings(CommonSettings):
    """Everything in CommonSettings plus sign-in (docs/identity.md)."""

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

    @property
    def port(self) -> int:
        return self.profile_port

    def token_lifetimes(self) -> Lifetimes:
        return Lifetimes(access_s=self.access_token_ttl_s, refresh_s=self.refresh_token_ttl_s)

    def login_limits(self) -> LoginLimits:
        return LoginLimits(
            per_user=self.login_max_failures_per_user,
            per_address=self.login_max_failures_per_address,
            window_s=self.login_window_s,
        )
