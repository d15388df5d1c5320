"""The HTTP edge (offsync_shared.http_edge) on a small app: NUL refused in path and query, body
caps per route and by authentication, streamed routes counted, bodies within the cap intact."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from offsync_shared import http
from offsync_shared.http_edge import KIB, BodyLimits, RouteLimit

LIMITS = BodyLimits(
    preauth_bytes=1 * KIB,
    default_bytes=4 * KIB,
    routes=(RouteLimit("POST", r"/big", 64 * KIB), RouteLimit("POST", r"/stream", 8 * KIB, streamed=True)),
)


def _app() -> FastAPI:
    app = FastAPI()

    async def ready() -> dict[str, bool]:
        return {"ok": True}

    http.install(app, "edge-test", ready, body_limits=LIMITS, authenticated=lambda h: h == "Bearer good")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/big")
    async def big(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"bytes": n}

    @app.get("/items/{item}")
    async def item(item: str, q: str = "") -> dict[str, str]:
        return {"item": item, "q": q}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://edge") as c:
        yield c


GOOD = {"Authorization": "Bearer good"}


async def _chunks(n: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


CASES = [
    # (name, method, path, body bytes or (chunks, size), headers, expected status)
    ("small-unauthenticated", "/echo", 500, {}, 200),
    ("over-preauth-cap", "/echo", 2 * KIB, {}, 413),
    ("authenticated-default-cap", "/echo", 3 * KIB, GOOD, 200),
    ("over-default-cap", "/echo", 5 * KIB, GOOD, 413),
    ("route-cap", "/big", 60 * KIB, GOOD, 200),
    ("route-cap-unauthenticated", "/big", 2 * KIB, {}, 413),
    ("bad-token-is-unauthenticated", "/big", 2 * KIB, {"Authorization": "Bearer bad"}, 413),
    ("streamed-within", "/stream", 7 * KIB, GOOD, 200),
    ("streamed-over", "/stream", 9 * KIB, GOOD, 413),
]


@pytest.mark.parametrize(("path", "size", "headers", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_caps(
    client: httpx.AsyncClient, path: str, size: int, headers: dict[str, str], status: int, chunked: bool
) -> None:
    content = _chunks(size // 256, 256) if chunked else b"x" * size
    r = await client.post(path, content=content, headers=headers)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json() == {"bytes": size // 256 * 256 if chunked else size}
    else:
        assert r.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("url", ["/items/a%00b", "/items/a?q=%00", "/items/a?q=x%00y"], ids=["path", "query", "inner"])
async def test_nul_in_path_or_query_is_refused(client: httpx.AsyncClient, url: str) -> None:
    r = await client.get(url)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


async def test_ordinary_requests_pass_untouched(client: httpx.AsyncClient) -> None:
    assert (await client.get("/items/a%20b", params={"q": "ü"})).json() == {"item": "a b", "q": "ü"}
    assert (await client.get("/healthz")).status_code == 200


INTEGERS = [
    # (name, JSON body, expected status): integers Python's parser keeps but orjson/bigint cannot
    ("int64-min", b'{"a": -9223372036854775808}', 200),
    ("uint64-max", b'{"a": 18446744073709551615}', 200),
    ("over-uint64", b'{"a": 18446744073709551616}', 400),
    ("under-int64", b'{"a": [1, -9223372036854775809]}', 400),
    ("long-digits-in-a-string", b'{"a": "123456789012345678901234567890"}', 200),
    ("long-digits-not-json", b"{12345678901234567890123", 200),
]


@pytest.mark.parametrize(("body", "status"), [c[1:] for c in INTEGERS], ids=[c[0] for c in INTEGERS])
async def test_integers_beyond_64_bits_are_refused_at_the_edge(
    client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    r = await client.post("/echo", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["code"] == "bad_request"
