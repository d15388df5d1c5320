"""schemathesis over the admin API, authenticated as the bootstrap admin: every operation of
profile-service's own OpenAPI document gets generated requests (deterministic: derandomized,
a fixed number of examples per operation), and none may be answered with a 5xx; every refusal
is the standard error body. The records API has the same run in test_records_api_fuzz.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from requests.structures import CaseInsensitiveDict
from schemathesis.checks import not_a_server_error

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack import api_fuzz
from offsync_stack.infra import Infra
from offsync_stack.testing import Stack, make_env, start_stack
from profile_service.app import create_app
from profile_service.settings import Settings

pytestmark = pytest.mark.e2e

schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
H = {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}


@pytest.fixture(scope="module")
def admin_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = asyncio.run(make_env(infra, "afuzz"))
    s = start_stack(env, tmp_path_factory.mktemp("afuzz-logs"), services=("profile-service",))
    try:
        # Give the fuzzer real things to hit besides 404s.
        requests.patch(f"{s.admin_url}/v1/entities/account", json={"offline_enabled": True}, headers=H, timeout=10)
        requests.post(f"{s.admin_url}/v1/profiles", json={"id": "p1", "name": "Fuzz"}, headers=H, timeout=10)
        yield s
    finally:
        s.group.stop_all()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as sess:
        yield sess


@pytest.mark.parametrize("operation", api_fuzz.operations(schema))
def test_no_admin_input_gets_a_server_error(
    operation: tuple[str, str], admin_stack: Stack, session: requests.Session
) -> None:
    def check(case: schemathesis.Case) -> None:
        if case.path_parameters and case.path_parameters.get("user_id") == BOOTSTRAP_ADMIN_USER_ID:
            case.path_parameters["user_id"] = "not-the-admin"  # keep the caller able to call
        case.headers = CaseInsensitiveDict({**dict(case.headers or {}), **H})
        response = case.call(base_url=admin_stack.admin_url, session=session, timeout=15)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            assert "error" in response.json(), response.text

    api_fuzz.fuzz(schema, operation, check, examples=3)


def test_the_admin_is_still_an_admin_after_the_fuzz(admin_stack: Stack) -> None:
    r = requests.get(f"{admin_stack.admin_url}/v1/users/{BOOTSTRAP_ADMIN_USER_ID}", headers=H, timeout=10)
    assert r.status_code == 200, r.text
