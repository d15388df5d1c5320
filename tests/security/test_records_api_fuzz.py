"""Bad input on the records API: schemathesis fuzzes every operation from the service's own
OpenAPI document, and a table of hostile bodies (oversized, deeply nested, invalid UTF-8, NUL
bytes, injection-shaped names, junk NDJSON) hits the write and import paths. No 5xx ever, every
refusal is the standard error body, and nothing the fuzzer sent changes the seeded record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from requests.structures import CaseInsensitiveDict
from schemathesis.checks import not_a_server_error

from conflict_service.app import create_app
from conflict_service.settings import Settings
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack import api_fuzz
from offsync_stack.infra import Infra
from offsync_stack.testing import Stack, make_env, start_stack

pytestmark = pytest.mark.e2e

# Built from the app object: building the schema connects to nothing.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
TOKEN = issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)
H = {"Authorization": f"Bearer {TOKEN}"}
ROOT_BU = "00000000-0000-0000-0000-000000000100"


@pytest.fixture(scope="module")
def records_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = asyncio.run(make_env(infra, "rfuzz"))
    s = start_stack(env, tmp_path_factory.mktemp("rfuzz-logs"), services=("profile-service", "conflict-service"))
    try:
        admin = s.admin_url
        requests.patch(
            f"{admin}/v1/entities/account", json={"offline_enabled": True}, headers=H, timeout=10
        ).raise_for_status()
        r = requests.post(
            f"{s.records_url}/v1/records/account",
            json={"id": "seed", "attributes": {"name": "Seed"}, "business_unit_id": ROOT_BU},
            headers=H,
            timeout=10,
        )
        r.raise_for_status()
        yield s
    finally:
        s.group.stop_all()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as sess:
        yield sess


def _seed_unchanged(s: Stack) -> None:
    r = requests.get(f"{s.records_url}/v1/records/account/seed", headers=H, timeout=10)
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["attributes"] == {"name": "Seed"}, r.text


@pytest.mark.parametrize("operation", api_fuzz.operations(schema))
def test_no_input_gets_a_server_error(
    operation: tuple[str, str], records_stack: Stack, session: requests.Session
) -> None:
    def check(case: schemathesis.Case) -> None:
        if case.path_parameters and case.path_parameters.get("record_id") == "seed":
            case.path_parameters["record_id"] = "not-the-seed"  # the seed stays untouched, so we can check it
        case.headers = CaseInsensitiveDict({**dict(case.headers or {}), **H})
        response = case.call(base_url=records_stack.records_url, session=session, timeout=15)
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code >= 400:
            assert "error" in response.json(), response.text

    api_fuzz.fuzz(schema, operation, check, examples=8)


DEEP = "[" * 5000 + "]" * 5000
HOSTILE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "oversized-attribute": ("POST", "/v1/records/account", {"json": {"attributes": {"name": "x" * 2_000_000}}}),
    "deeply-nested": (
        "POST",
        "/v1/records/account",
        {
            "content": b'{"attributes": {"name": ' + DEEP.encode() + b"}}",
            "headers": {"Content-Type": "application/json"},
        },
    ),
    "invalid-utf8": (
        "POST",
        "/v1/records/account",
        {"content": b'{"attributes": {"name": "\xff\xfe"}}', "headers": {"Content-Type": "application/json"}},
    ),
    "nul-byte-value": ("POST", "/v1/records/account", {"json": {"attributes": {"name": "a\x00b"}}}),
    "nul-byte-id": ("POST", "/v1/records/account", {"json": {"id": "a\x00b", "attributes": {"name": "n"}}}),
    "injection-entity": ("GET", "/v1/records/account';DROP TABLE data.records;--/seed", {}),
    "injection-filter": ("GET", "/v1/records/account?attr.name%27%3B--=x&owner_id=%27%20OR%201%3D1", {}),
    "huge-limit": ("GET", "/v1/records/account?limit=99999999999999999999", {}),
    "negative-after": ("GET", "/v1/records/account?after=-1", {}),
    "bad-if-match": (
        "PATCH",
        "/v1/records/account/seed",
        {"json": {"attributes": {"name": "n"}}, "headers": {"If-Match": '"9999999999999999999999"'}},
    ),
    "not-json": (
        "POST",
        "/v1/records/account",
        {"content": b"\x00\x01garbage", "headers": {"Content-Type": "application/json"}},
    ),
    "attributes-not-object": ("POST", "/v1/records/account", {"json": {"attributes": [1, 2, 3]}}),
    "unknown-owner-type": (
        "POST",
        "/v1/records/account",
        {"json": {"attributes": {"name": "n"}, "owner_type": "martian"}},
    ),
    "import-junk": (
        "POST",
        "/v1/records/account/import",
        {"content": b"{not json}\n\xff\n", "headers": {"Content-Type": "application/x-ndjson"}},
    ),
    "import-overwrite-seed-bad-line": (
        "POST",
        "/v1/records/account/import",
        {
            "content": b'{"id": "seed", "attributes": {"name": "pwned"}}\n{"id": 5, "attributes": "x"}\n',
            "headers": {"Content-Type": "application/x-ndjson"},
        },
    ),
    "import-deep": (
        "POST",
        "/v1/records/account/import",
        {
            "content": b'{"attributes": {"name": ' + DEEP.encode() + b"}}\n",
            "headers": {"Content-Type": "application/x-ndjson"},
        },
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_input_is_refused_cleanly(records_stack: Stack, name: str) -> None:
    method, path, kwargs = HOSTILE[name]
    headers = {**H, **kwargs.get("headers", {})}
    body = {k: v for k, v in kwargs.items() if k != "headers"}
    with httpx.Client(base_url=records_stack.records_url, timeout=30) as c:
        r = c.request(method, path, headers=headers, **body)
    assert r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        assert "error" in r.json(), r.text[:300]
    _seed_unchanged(records_stack)
