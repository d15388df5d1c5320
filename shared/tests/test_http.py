"""HTTP plumbing: JSON bodies without a content type (curl -d) are read as JSON; errors are JSON."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from offsync_shared import http


class Body(BaseModel):
    name: str


def _app() -> FastAPI:
    app = FastAPI()

    async def ready() -> dict[str, bool]:
        return {"ok": True}

    http.install(app, "test", ready)

    @app.post("/echo")
    async def echo(body: Body) -> dict[str, str]:
        return {"name": body.name}

    return app


async def test_form_or_missing_content_type_is_read_as_json() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as c:
        for headers in (
            {"content-type": "application/x-www-form-urlencoded"},
            {},
            {"content-type": "application/json"},
        ):
            r = await c.post("/echo", content=b'{"name": "x"}', headers=headers)
            assert r.status_code == 200 and r.json() == {"name": "x"}, (headers, r.text)
        r = await c.post("/echo", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation"
        r = await c.get("/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_database_away_is_503_not_500() -> None:
    app = _app()

    @app.get("/db")
    async def db() -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    ) as c:
        r = await c.get("/db")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable" and r.headers["retry-after"] == "1"


def _chained(outer: Exception, inner: BaseException) -> Exception:
    try:
        raise outer from inner
    except Exception as exc:  # noqa: BLE001 - building the chain is the point
        return exc


UNAVAILABLE = [
    ("refused", ConnectionRefusedError(), True),
    (
        "admin-shutdown",
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        True,
    ),
    ("starting-up", asyncpg.CannotConnectNowError("the database system is starting up"), True),
    ("connection-gone", asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True),
    ("released-connection", asyncpg.InternalClientError("cannot release"), True),
    ("wrapped", _chained(RuntimeError("while writing"), asyncpg.exceptions.AdminShutdownError("bye")), True),
    ("statement-timeout", asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), False),
    ("bug", KeyError("x"), False),
    ("sql-error", asyncpg.exceptions.UndefinedColumnError("no such column"), False),
]


@pytest.mark.parametrize("exc,expected", [r[1:] for r in UNAVAILABLE], ids=[r[0] for r in UNAVAILABLE])
def test_what_counts_as_a_backing_service_away(exc: BaseException, expected: bool) -> None:
    assert http._is_unavailable(exc) is expected


async def test_api_docs_load_swagger_ui_from_this_server_not_a_cdn() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as c:
        page = await c.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        assets = [a for a in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css") if a in page.text]
        assert len(assets) == 2
        for asset in assets:
            got = await c.get(asset)
            assert got.status_code == 200 and len(got.content) > 10_000
        assert (await c.get("/openapi.json")).status_code == 200


async def test_requests_are_counted_by_route_template_and_timed() -> None:
    from prometheus_client import generate_latest

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as c:
        await c.post("/echo", json={"name": "x"})
        await c.get("/nowhere/123")
    text = generate_latest().decode()
    assert 'offsync_http_requests_total{method="POST",route="/echo",service="test",status="200"}' in text
    assert 'route="(unmatched)",service="test",status="404"' in text
    assert 'offsync_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/echo",service="test"}' in text
