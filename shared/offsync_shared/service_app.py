"""The one application factory every HTTP service uses: a FastAPI app whose lifespan opens the
service's runtime (pool, migrations, topics, producer, outbox relay, broker watch), then the
service's own parts (its workers, its gateway), and closes them in reverse; with /healthz,
/readyz, /metrics and the error handlers installed.

A service says only what is its own: its schema, and an async context manager ``parts(rt, app)``
that starts its workers, yields while the service runs, and stops them (it may put what routes
need on ``app.state``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from offsync_shared import http
from offsync_shared.http_edge import BodyLimits, TokenCheck
from offsync_shared.runtime import Runtime, open_runtime
from offsync_shared.settings import CommonSettings

Parts = Callable[[Runtime, FastAPI], AbstractAsyncContextManager[None]]
# Readiness checks of the service's own parts, added to the runtime's (database, broker, tasks).
ExtraReady = Callable[[FastAPI], dict[str, bool]]


@asynccontextmanager
async def _no_parts(rt: Runtime, app: FastAPI) -> AsyncIterator[None]:
    yield


def service_app(
    settings: CommonSettings,
    *,
    name: str,
    schema: str | None,
    migrations: str | None,
    parts: Parts = _no_parts,
    relay: bool = True,
    extra_ready: ExtraReady | None = None,
    app_class: type[FastAPI] = FastAPI,
    body_limits: BodyLimits | None = None,
    authenticated: TokenCheck | None = None,
    form_prefixes: tuple[str, ...] = (),
    **fastapi_args: Any,
) -> FastAPI:
    """The app of service ``name``; ``body_limits``, ``authenticated`` and ``form_prefixes`` are the
    HTTP edge's (``http.install``), ``fastapi_args`` (title, description ...) go to FastAPI."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, schema=schema, migrations=migrations, relay=relay, name=name) as rt:
            async with parts(rt, app):
                app.state.runtime = rt
                try:
                    yield
                finally:
                    app.state.runtime = None

    app = app_class(version="0.1.0", lifespan=lifespan, **fastapi_args)
    app.state.runtime = None

    async def ready() -> dict[str, bool]:
        rt: Runtime | None = app.state.runtime
        if rt is None:
            return {"started": False}
        checks = await rt.ready()
        if extra_ready is not None:
            checks.update(extra_ready(app))
        return checks

    if authenticated is None:
        http.install(app, name, ready, body_limits=body_limits, form_prefixes=form_prefixes)
    else:
        http.install(
            app, name, ready, body_limits=body_limits, authenticated=authenticated, form_prefixes=form_prefixes
        )
    return app
