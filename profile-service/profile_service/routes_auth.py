"""Sign-in routes: login, refresh, logout, password changes, and an admin revoking a device's
sign-ins. The rules live in ``identity`` and ``sessions``; these routes validate and answer."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from offsync_shared.auth import ADMIN_AUDIENCE, DEVICE_AUDIENCE, Principal, verify_token
from offsync_shared.errors import Forbidden, NotFound, OffsyncError, Unauthenticated
from offsync_shared.events.sync_notify import SessionsRevoked
from profile_service import identity, passwords, sessions
from profile_service.admin_events import Emitter
from profile_service.auth_schemas import (
    LoginIn,
    LogoutIn,
    OidcLoginIn,
    PasswordChangeIn,
    PasswordSetIn,
    PasswordSetOut,
    RefreshIn,
    RevokedOut,
    ServerConfigOut,
    TokenPairOut,
)
from profile_service.context import ConnDep, CtxDep, SettingsDep
from profile_service.oidc import OidcVerifier
from profile_service.schemas import PathId
from profile_service.settings import Settings

router = APIRouter(prefix="/v1", tags=["sign-in"])
_bearer = HTTPBearer(auto_error=False, description="An access token of either audience")


def _pair(issued: sessions.Issued) -> TokenPairOut:
    return TokenPairOut(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
        user_id=issued.identity.user_id,
        username=issued.identity.username,
        is_admin=issued.identity.is_admin,
    )


@router.post(
    "/auth/login",
    summary="Sign in with a username and password",
    description=(
        "Answers a short-lived access token for the audience asked for and a rotating refresh token "
        "(bound to device_id). A wrong username and a wrong password get the same 401; too many failed "
        "attempts for a username or from one client address get 429 with Retry-After."
    ),
    response_model=TokenPairOut,
)
async def login(request: Request, body: LoginIn, settings: SettingsDep) -> TokenPairOut:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    who = await identity.authenticate(
        pool,
        body.username,
        body.password,
        client_address=request.client.host if request.client else None,
        limits=settings.login_limits(),
        env=settings.env,
    )
    async with pool.acquire() as conn:
        return await _sign_in(conn, who, body.audience, body.device_id, settings)


@router.post(
    "/auth/oidc",
    summary="Sign in with an identity provider's access token",
    description=(
        "Exchanges an access token of the trusted OpenID Connect provider (verified against its JWKS: "
        "signature, issuer, audience, expiry with clock skew) for Offsync tokens, the same answer as a "
        "password login. The configured claim (OFFSYNC_OIDC_USER_CLAIM) names the Offsync user. 404 when "
        "no provider is configured."
    ),
    response_model=TokenPairOut,
)
async def oidc_login(request: Request, body: OidcLoginIn, conn: ConnDep, settings: SettingsDep) -> TokenPairOut:
    verifier: OidcVerifier | None = request.app.state.oidc
    if verifier is None:
        raise NotFound("no identity provider is configured (OFFSYNC_OIDC_ISSUER)")
    claims = await verifier.verify(body.token)
    value = verifier.subject(claims)
    who = await identity.find(conn, value, verifier.config.maps_to)
    if who is None:
        raise Unauthenticated(f"no Offsync user matches this identity ({verifier.config.user_claim})")
    if not who.enabled:
        raise Forbidden("this user is disabled; ask an administrator")
    return await _sign_in(conn, who, body.audience, body.device_id, settings)


@router.post(
    "/auth/refresh",
    summary="Exchange a refresh token for a new token pair",
    description=(
        "Rotates: the refresh token presented is spent and a new one answered. Presenting a spent refresh "
        "token again revokes every token of that sign-in (401), as does presenting it for another device."
    ),
    response_model=TokenPairOut,
)
async def refresh(request: Request, body: RefreshIn, conn: ConnDep, settings: SettingsDep) -> TokenPairOut:
    emitter = _emitter(request)

    async def misused(tx: asyncpg.Connection, user_id: str, family_id: str) -> None:
        await emitter.sessions_revoked(
            tx, SessionsRevoked(user_id=user_id, reason="refresh_token_misused", session_ids=[family_id])
        )

    issued = await sessions.rotate(
        conn,
        body.refresh_token,
        body.device_id,
        secret=settings.jwt_secret,
        issuer=settings.jwt_issuer,
        lifetimes=settings.token_lifetimes(),
        on_misuse=misused,
    )
    return _pair(issued)


@router.post(
    "/auth/logout",
    summary="Sign out",
    description="Revokes every token of the sign-in the refresh token belongs to. Unknown tokens revoke nothing.",
    response_model=RevokedOut,
)
async def logout(request: Request, body: LogoutIn, conn: ConnDep) -> RevokedOut:
    async with conn.transaction():
        out = await sessions.logout(conn, body.refresh_token)
        if out is None:
            return RevokedOut(revoked=0)
        user_id, family_id, revoked = out
        await _emitter(request).sessions_revoked(
            conn, SessionsRevoked(user_id=user_id, reason="signed_out", session_ids=[family_id])
        )
    return RevokedOut(revoked=revoked)


def _emitter(request: Request) -> Emitter:
    emitter: Emitter = request.app.state.emitter
    return emitter


def _caller(settings: Settings, creds: HTTPAuthorizationCredentials | None) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthenticated("missing bearer token")
    last: OffsyncError | None = None
    for audience in (DEVICE_AUDIENCE, ADMIN_AUDIENCE):
        try:
            return verify_token(settings.jwt_secret, creds.credentials, audience, issuer=settings.jwt_issuer)
        except Unauthenticated as exc:
            last = exc
    assert last is not None
    raise last


@router.post(
    "/auth/password",
    summary="Change your own password",
    description=(
        "Needs an access token (either audience) and the current password (failures count towards the "
        "sign-in rate limit). Every other sign-in of the user is revoked; the caller's stays."
    ),
    response_model=PasswordSetOut,
)
async def change_password(
    request: Request,
    body: PasswordChangeIn,
    settings: SettingsDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> PasswordSetOut:
    caller = _caller(settings, creds)
    pool: asyncpg.Pool = request.app.state.runtime.pool
    async with pool.acquire() as conn:
        who = await identity.load(conn, caller.user_id)
    if who is None or (caller.generation is not None and caller.generation != who.generation):
        raise Unauthenticated("this user no longer exists")
    passwords.check_rules(body.new_password, field="new_password")
    await identity.authenticate(
        pool,
        who.username,
        body.current_password,
        client_address=request.client.host if request.client else None,
        limits=settings.login_limits(),
        env=settings.env,
    )
    new_hash = await passwords.hash_password(body.new_password, settings.env)
    async with pool.acquire() as conn, conn.transaction():
        await identity.store_password_hash(conn, who.user_id, new_hash)
        revoked = await sessions.revoke_user(conn, who.user_id, "password changed", except_family=caller.session_id)
        await _emitter(request).sessions_revoked(
            conn,
            SessionsRevoked(
                user_id=who.user_id,
                reason="password_changed",
                all_sessions=True,
                except_session_id=caller.session_id,
            ),
        )
    return PasswordSetOut(user_id=who.user_id, revoked=revoked)


@router.put(
    "/users/{user_id}/password",
    summary="Set or reset a user's password (admin)",
    description="Stores the new password's argon2id hash and revokes every sign-in of the user.",
    response_model=PasswordSetOut,
    tags=["users"],
)
async def set_password(ctx: CtxDep, user_id: PathId, body: PasswordSetIn) -> PasswordSetOut:
    passwords.check_rules(body.password)
    new_hash = await passwords.hash_password(body.password, ctx.settings.env)
    async with ctx.tx() as conn:
        await identity.store_password_hash(conn, user_id, new_hash)
        revoked = await sessions.revoke_user(conn, user_id, "password reset by an administrator")
        await ctx.emitter.sessions_revoked(
            conn, SessionsRevoked(user_id=user_id, reason="password_changed", all_sessions=True)
        )
    return PasswordSetOut(user_id=user_id, revoked=revoked)


@router.post(
    "/users/{user_id}/devices/{device_id}/revoke",
    summary="Revoke a device's sign-ins (admin)",
    description=(
        "Revokes every refresh token the user's device holds: the device cannot renew its access token and "
        "must sign in again. Its open websocket sessions are closed at once (close 4010) and its current access "
        "token opens no new one (docs/identity.md)."
    ),
    response_model=RevokedOut,
    tags=["users"],
)
async def revoke_device(ctx: CtxDep, user_id: PathId, device_id: PathId) -> RevokedOut:
    async with ctx.tx() as conn:
        if await identity.load(conn, user_id) is None:
            raise NotFound(f"user {user_id!r} not found")
        revoked = await sessions.revoke_device(conn, user_id, device_id, "device revoked by an administrator")
        await ctx.emitter.sessions_revoked(
            conn, SessionsRevoked(user_id=user_id, reason="device_revoked", device_id=device_id)
        )
    return RevokedOut(revoked=revoked)


@router.get(
    "/auth/config",
    summary="What a device needs to sign in and sync",
    description=(
        "Unauthenticated. Names the service (so a client knows it reached Offsync), the device websocket URL "
        "and the sign-in endpoints. The device SDK and CLI read it from the URL the user typed."
    ),
    response_model=ServerConfigOut,
)
async def server_config(request: Request, settings: SettingsDep) -> ServerConfigOut:
    sync_url = settings.public_sync_url
    if not sync_url:
        host = request.url.hostname or settings.host
        scheme = "wss" if request.url.scheme == "https" else "ws"
        sync_url = f"{scheme}://{host}:{settings.sync_port}/v1/sync"
    return ServerConfigOut(sync_url=sync_url, oidc_issuer=settings.oidc_issuer or None)


async def _sign_in(
    conn: asyncpg.Connection,
    who: identity.Identity,
    audience: Literal["device", "admin"],
    device_id: str | None,
    settings: Settings,
) -> TokenPairOut:
    """Start a sign-in (password or identity provider alike) and answer its token pair."""
    async with conn.transaction():
        issued = await sessions.start(
            conn,
            who,
            audience,
            device_id,
            secret=settings.jwt_secret,
            issuer=settings.jwt_issuer,
            lifetimes=settings.token_lifetimes(),
        )
    return _pair(issued)
