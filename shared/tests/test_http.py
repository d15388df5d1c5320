"""HTTP plumbing: JSON bodies without a content type (curl -d) are read as JSON; errors are JSON."""

from __future__ import annotations

import httpx
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
        for headers in ({"content-type": "application/x-www-form-urlencoded"}, {}, {"content-type": "application/json"}):
            r = await c.post("/echo", content=b'{"name": "x"}', headers=headers)
            assert r.status_code == 200 and r.json() == {"name": "x"}, (headers, r.text)
        r = await c.post("/echo", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation"
        r = await c.get("/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_database_away_is_503_not_500() -> None:
    import asyncpg

    app = _app()

    @app.get("/db")
    async def db() -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t") as c:
        r = await c.get("/db")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable" and r.headers["retry-after"] == "1"
