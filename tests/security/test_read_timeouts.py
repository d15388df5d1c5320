"""Finding 7: half-sent HTTP requests were held forever (180 held 40 s, never closed). Every
service now closes a connection whose request head is not complete within
OFFSYNC_HTTP_HEADER_TIMEOUT_S of its first byte, or whose body falls silent for
OFFSYNC_HTTP_BODY_IDLE_TIMEOUT_S (2 s for this stack, 10 s / 30 s by default)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from tests.security.conftest import ADMIN_HEADERS, READ_TIMEOUT_S, Findings

pytestmark = pytest.mark.e2e
SERVICES = ["profile-service", "conflict-service", "sync-service", "publish-service"]


def _held_for(url: str, sent: bytes) -> float:
    """Send ``sent`` (an unfinished request) and return how long until the server closed."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=5 * READ_TIMEOUT_S + 10) as s:
        start = time.monotonic()
        s.sendall(sent)
        while s.recv(4096):  # whatever the server answers, until it closes (recv -> b"")
            pass
        return time.monotonic() - start


HALF_SENT = {
    "nothing": b"",
    "half-a-head": b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Le",
    "head-no-blank-line": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    "body-short": b"POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
}


@pytest_asyncio.fixture(scope="module")
async def held_probes(findings: Findings) -> AsyncIterator[dict[tuple[str, str], Future[float]]]:
    """Every (service, half-sent request) probe, all started at once on their own threads: each
    waits out a read timeout, so one after another they took a minute; together, one timeout."""
    with ThreadPoolExecutor(len(SERVICES) * len(HALF_SENT)) as pool:
        yield {
            (service, what): pool.submit(_held_for, findings.stack.url(service), sent)
            for service in SERVICES
            for what, sent in HALF_SENT.items()
        }


@pytest.mark.parametrize("what", list(HALF_SENT), ids=list(HALF_SENT))
@pytest.mark.parametrize("service", SERVICES)
async def test_half_sent_requests_are_closed(
    held_probes: dict[tuple[str, str], Future[float]], service: str, what: str
) -> None:
    held = await asyncio.wrap_future(held_probes[(service, what)])
    assert held < 3 * READ_TIMEOUT_S + 2, held


async def test_a_crowd_of_half_sent_requests_is_closed_and_service_goes_on(findings: Findings) -> None:
    url = findings.stack.admin_url
    loop = asyncio.get_running_loop()
    # A thread per connection, so all 60 are held at once (the default executor has 6 on 2 cores).
    with ThreadPoolExecutor(60) as pool:
        held = await asyncio.gather(
            *(loop.run_in_executor(pool, _held_for, url, HALF_SENT["half-a-head"]) for _ in range(60))
        )
    assert max(held) < 3 * READ_TIMEOUT_S + 5, max(held)
    async with httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS, timeout=10) as c:
        assert (await c.get("/v1/roles")).status_code == 200


async def test_complete_requests_on_a_kept_alive_connection_still_work(findings: Findings) -> None:
    async with httpx.AsyncClient(base_url=findings.stack.admin_url, headers=ADMIN_HEADERS, timeout=10) as c:
        for _ in range(3):  # one kept-alive connection, several requests
            assert (await c.get("/v1/roles")).status_code == 200
