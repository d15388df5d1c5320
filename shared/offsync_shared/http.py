"""FastAPI plumbing every HTTP service uses: health/readiness/metrics routes and the one place
that maps errors to JSON bodies (``{"error": {"code", "message", "field"?}}``), never a stack trace."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from offsync_shared import apidocs, db, metrics
from offsync_shared.errors import OffsyncError, RateLimited
from offsync_shared.http_edge import BodyLimits, EdgeGuard, TokenCheck

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[dict[str, bool]]]


def error_body(code: str, message: str, field: str | None = None, **extra: object) -> dict[str, object]:
    err: dict[str, object] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    err.update(extra)
    return {"error": err}


class JsonByDefault:
    """Treats a request body sent without a content type, or as an HTML form (curl's ``-d``
    default), as JSON: these APIs take no forms, and an admin's first curl should just work."""

    def __init__(self, app: ASGIApp, form_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.form_prefixes = form_prefixes  # paths that do take HTML forms (the admin console)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in ("POST", "PUT", "PATCH")
            and not scope["path"].startswith(self.form_prefixes)
        ):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            ctype = dict(scope["headers"]).get(b"content-type", b"")
            if not ctype or ctype.startswith(b"application/x-www-form-urlencoded"):
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts every HTTP request by route template and status and times it, so ``/metrics``
    shows traffic, errors and latency per route (the template, never the raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            method = scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            metrics.HTTP_LATENCY.labels(self.service, method, template).observe(time.perf_counter() - start)


# What a database restart raises in a request: refused/broken sockets, connections the server
# terminated (class 57: admin/crash shutdown, starting up), and asyncpg's own errors about a
# connection that died under it (db.DATABASE_AWAY has them all but the timeout and class 57's rest).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    *db.DATABASE_AWAY,
    asyncio.TimeoutError,
    asyncpg.exceptions.OperatorInterventionError,
)


def _is_unavailable(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what it was raised from) means a backing service is away."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, _UNAVAILABLE) and not isinstance(exc, asyncpg.exceptions.QueryCanceledError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _nobody(_: str | None) -> bool:
    return False


def install(
    app: FastAPI,
    service: str,
    ready: ReadyCheck,
    *,
    body_limits: BodyLimits | None = None,
    authenticated: TokenCheck = _nobody,
    form_prefixes: tuple[str, ...] = (),
) -> None:
    """Add /healthz, /readyz, /metrics, the error handlers and the edge checks (NUL, body caps:
    ``authenticated`` tells whether an Authorization header earns the per-route caps; without it
    every body is held to the pre-authentication cap), offline /docs and per-route request metrics
    to ``app``; ``form_prefixes``: paths whose POSTs are HTML forms (the admin console), left as sent."""

    app.add_middleware(JsonByDefault, form_prefixes=form_prefixes)
    app.add_middleware(RequestMetrics, service=service)
    apidocs.install(app)
    app.add_middleware(EdgeGuard, limits=body_limits or BodyLimits(), authenticated=authenticated)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await ready()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(OffsyncError)
    async def offsync_error(_: Request, exc: OffsyncError) -> JSONResponse:
        body = error_body(exc.code, exc.message, exc.field)
        if exc.details is not None:
            body["error"]["details"] = exc.details  # type: ignore[index]
        headers: dict[str, str] = {}
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")} for e in errors
        ]
        return JSONResponse(
            error_body("validation", str(first.get("msg", "invalid request")), ".".join(loc) or None, details=details),
            status_code=422,
        )

    # Values PostgreSQL cannot take (NUL in text, numbers and instants out of a column's range),
    # whether the server refused them or asyncpg could not encode them: the caller's input.
    @app.exception_handler(asyncpg.DataError)
    @app.exception_handler(asyncpg.exceptions._base.DataError)
    async def data_error(_: Request, exc: Exception) -> JSONResponse:
        metrics.HTTP_REQUESTS.labels(service, "400").inc()
        return JSONResponse(error_body("bad_request", "a value in the request cannot be stored or compared"), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        if _is_unavailable(exc):  # the database (or a socket under it) is away: retry later
            log.warning("backing service unavailable: %s: %s", type(exc).__name__, exc)
            return JSONResponse(
                error_body("unavailable", "a backing service is unavailable; retry shortly", retriable=True),
                status_code=503,
                headers={"Retry-After": "1"},
            )
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", "internal error; see server logs"), status_code=500)
