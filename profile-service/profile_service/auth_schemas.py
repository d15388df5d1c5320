"""Request and response bodies of sign-in: login, refresh, logout, passwords, device revocation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from profile_service.passwords import MAX_LENGTH
from profile_service.schemas import Body, Id, Username, _no_nul, _utf8

Password = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_LENGTH), AfterValidator(_no_nul), AfterValidator(_utf8)
]
RefreshToken = Annotated[
    str, StringConstraints(min_length=1, max_length=512), AfterValidator(_no_nul), AfterValidator(_utf8)
]


class LoginIn(Body):
    username: Username
    password: Password
    device_id: Id | None = Field(None, description="Required for audience 'device': the refresh token is bound to it.")
    audience: Literal["device", "admin"] = Field(
        "device", description="'device' for the sync websocket, 'admin' for the admin and records APIs."
    )


class OidcLoginIn(Body):
    token: Annotated[
        str, StringConstraints(min_length=1, max_length=16384), AfterValidator(_no_nul), AfterValidator(_utf8)
    ] = Field(description="An access token of the trusted identity provider (OFFSYNC_OIDC_ISSUER).")
    device_id: Id | None = Field(None, description="Required for audience 'device'.")
    audience: Literal["device", "admin"] = "device"


class RefreshIn(Body):
    refresh_token: RefreshToken
    device_id: Id | None = Field(None, description="The device the refresh token was issued to (null for none).")


class LogoutIn(Body):
    refresh_token: RefreshToken


class PasswordSetIn(Body):
    password: Password


class PasswordChangeIn(Body):
    current_password: Password
    new_password: Password


class TokenPairOut(BaseModel):
    access_token: str = Field(description="JWT for the audience asked for; send as 'Authorization: Bearer …'.")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")
    refresh_token: str = Field(description="Opaque; exchange it at POST /v1/auth/refresh before it expires.")
    refresh_expires_in: int = Field(description="Seconds the refresh token is valid if not used.")
    user_id: str
    username: str
    is_admin: bool = Field(description="Whether the user holds an administrator role.")


class RevokedOut(BaseModel):
    revoked: int = Field(description="How many live refresh tokens were revoked.")


class PasswordSetOut(BaseModel):
    user_id: str
    revoked: int = Field(description="Sign-ins of the user revoked by the change.")


class ServerConfigOut(BaseModel):
    service: Literal["offsync"] = Field("offsync", description="Tells a client it reached an Offsync server.")
    sync_url: str = Field(description="The device websocket (OFFSYNC_PUBLIC_SYNC_URL, else this host's sync port).")
    login: str = Field("/v1/auth/login", description="Where to sign in with a username and password.")
    refresh: str = Field("/v1/auth/refresh", description="Where to exchange a refresh token.")
    oidc_issuer: str | None = Field(None, description="The external identity provider trusted, if any.")
