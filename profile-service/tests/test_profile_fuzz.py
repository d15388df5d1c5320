"""Fuzz of the whole admin API from its OpenAPI schema (schemathesis): no input, valid or not,
gets a 5xx. The service runs under uvicorn in its own thread against the real PostgreSQL/broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra
from offsync_stack.testing import make_env
from profile_service.app import create_app
from profile_service.settings import Settings

pytestmark = pytest.mark.integration

# The schema comes from the app object itself: building it connects to nothing.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def server(infra: Infra) -> Iterator[tuple[str, str]]:
    env = asyncio.run(make_env(infra, "fuzz"))
    cfg = Settings(**env.settings_kwargs())
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=srv.run, name="profile-fuzz", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):  # bounded wait for the lifespan (migrations, bootstrap, broker)
        if srv.started:
            break
        thread.join(0.05)
    assert srv.started, "profile-service did not start"
    token = issue_token(cfg.jwt_secret, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)
    # Give the fuzzer real things to hit besides 404s.
    h = {"Authorization": f"Bearer {token}"}
    requests.patch(f"{url}/v1/entities/account", json={"offline_enabled": True}, headers=h, timeout=10)
    requests.post(f"{url}/v1/profiles", json={"id": "p1", "name": "Fuzz"}, headers=h, timeout=10)
    try:
        yield url, token
    finally:
        srv.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
def test_no_input_gets_a_server_error(
    case: schemathesis.Case, server: tuple[str, str], session: requests.Session
) -> None:
    url, token = server
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call(base_url=url, session=session, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        assert "error" in response.json(), response.text
