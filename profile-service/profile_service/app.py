"""The profile-service application: the shared service app, which seeds an empty organization as
it starts, and the admin API routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from offsync_shared import http
from offsync_shared.runtime import Runtime
from offsync_shared.service_app import service_app
from profile_service import (
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
        schema=SCHEMA,
        migrations="profile_service.migrations",
        parts=seeded,
        title="Offsync profile-service",
        description="Admin API: organization model, entity metadata and mobile offline profiles. See docs/admin-api.md.",
    )

    # Safety nets: racing writers can still hit a constraint after our checks passed; that is a
    # conflict for the caller, not a server error. Values PostgreSQL cannot store are bad input.
    @app.exception_handler(asyncpg.IntegrityConstraintViolationError)
    async def integrity_error(_: Request, exc: asyncpg.IntegrityConstraintViolationError) -> JSONResponse:
        return JSONResponse(
            http.error_body("conflict", f"conflicting concurrent change: {exc.__class__.__name__}"), status_code=409
        )

    @app.exception_handler(asyncpg.DataError)
    async def data_error(_: Request, exc: asyncpg.DataError) -> JSONResponse:
        return JSONResponse(http.error_body("bad_request", "a value cannot be stored"), status_code=400)

    for module in (routes_auth, routes_device_metadata, routes_tokens, routes_org, routes_profiles, routes_solutions):
        app.include_router(module.router)
    return app
