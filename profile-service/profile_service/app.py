"""The profile-service application: opens its runtime in the lifespan, seeds an empty
organization, and wires the admin API routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from offsync_shared import http
from offsync_shared.runtime import Runtime, open_runtime
from profile_service import (
    console,
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
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_runtime(settings, schema=SCHEMA, migrations="profile_service.migrations") as rt,
            httpx.AsyncClient(timeout=10) as idp_client,
        ):
            oidc = settings.oidc_config()
            app.state.oidc = None if oidc is None else OidcVerifier(oidc, idp_client)
            emitter = Emitter(settings.topic_prefix)
            await bootstrap(rt.pool, emitter)
            await ensure_admin_credentials(
                rt.pool, settings.bootstrap_admin_username, settings.bootstrap_admin_password, settings.env
            )
            state["rt"] = rt
            app.state.runtime = rt
            app.state.emitter = emitter
            yield

    app = FastAPI(
        title="Offsync profile-service",
        version="0.1.0",
        lifespan=lifespan,
        description="Admin API: organization model, entity metadata and mobile offline profiles. See docs/admin-api.md.",
    )

    async def ready() -> dict[str, bool]:
        rt = state.get("rt")
        return await rt.ready() if rt else {"started": False}

    http.install(app, "profile-service", ready, form_prefixes=("/console/",))

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
    console.install(app)
    return app
