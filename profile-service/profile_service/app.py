"""The profile-service application: the shared service app, which seeds an empty organization as
it starts, and the admin API routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from offsync_shared import http
from offsync_shared.auth import ADMIN_AUDIENCE
from offsync_shared.http_edge import KIB, MIB, BodyLimits, RouteLimit, bearer_check
from offsync_shared.runtime import Runtime
from offsync_shared.service_app import service_app
from profile_service import (
    console,
    routes_audit,
    routes_auth,
    routes_device_metadata,
    routes_org,
    routes_profiles,
    routes_solutions,
    routes_tokens,
)
from profile_service.admin_events import Emitter
from profile_service.bootstrap import bootstrap, ensure_admin_credentials
from profile_service.oidc import OidcVerifier
from profile_service.settings import Settings

SCHEMA = "admin"

# Bodies: 16 KiB until a valid admin token is shown (sign-in, refresh), 1 MiB per admin change;
# a solution (a whole profile set) imports up to 8 MiB. docs/security.md lists them.
BODY_LIMITS = BodyLimits(
    preauth_bytes=16 * KIB,
    default_bytes=1 * MIB,
    routes=(RouteLimit("POST", r"/v1/solutions.*", 8 * MIB),),
)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def seeded(rt: Runtime, app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=10) as idp_client:
            oidc = settings.oidc_config()
            app.state.oidc = None if oidc is None else OidcVerifier(oidc, idp_client)
            emitter = Emitter(settings.topic_prefix)
            await bootstrap(rt.pool, emitter)
            await ensure_admin_credentials(
                rt.pool, settings.bootstrap_admin_username, settings.bootstrap_admin_password, settings.env
            )
            app.state.emitter = emitter
            yield

    app = service_app(
        settings,
        name="profile-service",
        body_limits=BODY_LIMITS,
        authenticated=bearer_check(settings.jwt_secret, ADMIN_AUDIENCE, settings.jwt_issuer),
        schema=SCHEMA,
        migrations="profile_service.migrations",
        parts=seeded,
        title="Offsync profile-service",
        description="Admin API: organization model, entity metadata and mobile offline profiles. See docs/admin-api.md.",
        form_prefixes=("/console/",),
    )
    # The field app (served by sync-service) signs in here from its own origin; outermost, so a
    # preflight is answered before the body caps and token checks.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins(),
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type"],
        max_age=600,
    )

    # Safety nets: racing writers can still hit a constraint after our checks passed; that is a
    # conflict for the caller, not a server error (values PostgreSQL cannot store: offsync_shared.http).
    @app.exception_handler(asyncpg.IntegrityConstraintViolationError)
    async def integrity_error(_: Request, exc: asyncpg.IntegrityConstraintViolationError) -> JSONResponse:
        return JSONResponse(
            http.error_body("conflict", f"conflicting concurrent change: {exc.__class__.__name__}"), status_code=409
        )

    for module in (
        routes_auth,
        routes_device_metadata,
        routes_tokens,
        routes_org,
        routes_profiles,
        routes_solutions,
        routes_audit,
    ):
        app.include_router(module.router)
    console.install(app)
    return app
