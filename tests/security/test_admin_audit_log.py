"""Finding 8: admin changes left no trace. Every change through the admin API now writes an
audit entry (who, what, when, from which address; secrets redacted) in the change's own
transaction; admins read it with filters and paging; nobody, not even SQL, can alter it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_stack.infra import Infra
from offsync_stack.testing import InfraEnv, make_env, release_env
from profile_service.app import create_app
from profile_service.settings import Settings

pytestmark = pytest.mark.integration
ROOT_BU = "00000000-0000-0000-0000-000000000100"


@pytest_asyncio.fixture(scope="module")
async def env(infra: Infra) -> AsyncIterator[InfraEnv]:
    env = await make_env(infra, "audit")
    yield env
    await release_env(infra, env)


@pytest_asyncio.fixture(scope="module")
async def admin(env: InfraEnv) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(**env.settings_kwargs())
    app = create_app(settings)
    token = issue_token(settings.jwt_secret, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("198.51.100.7", 4711)),
            base_url="http://profile",
            headers={"Authorization": f"Bearer {token}"},
        ) as c,
    ):
        yield c


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 300, r.text
    return r.json() if r.content else {}


async def test_each_admin_change_is_recorded_with_who_what_when_where(admin: httpx.AsyncClient) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    _ok(
        await admin.post(
            "/v1/roles", json={"id": "auditor", "name": "Auditor", "privileges": {"account": {"read": "user"}}}
        )
    )
    _ok(await admin.patch("/v1/roles/auditor", json={"name": "Auditors"}))
    _ok(await admin.patch("/v1/org-settings", json={"conflict_detection": True}))
    _ok(await admin.post("/v1/users", json={"id": "ann", "name": "Ann", "business_unit_id": ROOT_BU}))
    _ok(await admin.put("/v1/users/ann/roles/auditor"))
    _ok(await admin.post("/v1/tokens", json={"user_id": "ann", "audience": "admin"}))
    _ok(await admin.put("/v1/users/ann/password", json={"password": "Correct-Horse-Battery-42"}))
    _ok(await admin.post("/v1/users/ann/devices/phone/revoke"))
    # A refused change leaves no entry (its transaction rolled back with it).
    assert (await admin.post("/v1/roles", json={"id": "auditor", "name": "again"})).status_code == 409

    page = _ok(await admin.get("/v1/audit", params={"since": before.isoformat()}))
    got = [(e["method"], e["route"], e["target_kind"], e["target_id"]) for e in page["items"]]
    assert got == [
        ("POST", "/v1/roles", "roles", None),
        ("PATCH", "/v1/roles/{role_id}", "roles", "auditor"),
        ("PATCH", "/v1/org-settings", "org-settings", None),
        ("POST", "/v1/users", "users", None),
        ("PUT", "/v1/users/{user_id}/roles/{role_id}", "users", "ann"),
        ("POST", "/v1/tokens", "tokens", None),
        ("PUT", "/v1/users/{user_id}/password", "users", "ann"),
        ("POST", "/v1/users/{user_id}/devices/{device_id}/revoke", "users", "ann"),
    ]
    for e in page["items"]:
        assert e["actor_id"] == BOOTSTRAP_ADMIN_USER_ID and e["client_address"] == "198.51.100.7"
        assert before <= datetime.fromisoformat(e["at"]) <= datetime.now(UTC) + timedelta(seconds=1)
    assert page["items"][1]["details"] == {"body": {"name": "Auditors"}}
    assert page["items"][2]["details"] == {"body": {"conflict_detection": True}}
    assert page["items"][4]["details"]["path_params"] == {"user_id": "ann", "role_id": "auditor"}
    # The password itself never reaches the log.
    assert page["items"][6]["details"]["body"] == {"password": "[redacted]"}
    assert "Correct-Horse" not in str(page)


async def test_filters_and_paging(admin: httpx.AsyncClient) -> None:
    for i in range(5):
        _ok(await admin.post("/v1/business-units", json={"id": f"bu-{i}", "name": f"BU {i}", "parent_id": ROOT_BU}))
    _ok(await admin.patch("/v1/business-units/bu-3", json={"name": "Renamed"}))
    only = _ok(await admin.get("/v1/audit", params={"target_kind": "business-units", "target_id": "bu-3"}))
    assert [e["method"] for e in only["items"]] == ["PATCH"]
    seen, after = [], None
    while True:
        params: dict[str, str | int] = {
            "target_kind": "business-units",
            "limit": 2,
            **({"after": after} if after else {}),
        }
        page = _ok(await admin.get("/v1/audit", params=params))
        seen += [e["id"] for e in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert len(seen) == 6 and seen == sorted(seen)
    assert _ok(await admin.get("/v1/audit", params={"actor_id": "nobody"}))["items"] == []


async def test_secrets_in_a_body_are_redacted() -> None:
    from profile_service.audit import details_of

    d = details_of(b'{"user_id": "ann", "password": "hunter2", "nested": {"refresh_token": "t"}}', {})
    assert d == {"body": {"user_id": "ann", "password": "[redacted]", "nested": {"refresh_token": "[redacted]"}}}


async def test_the_log_is_append_only(env: InfraEnv, admin: httpx.AsyncClient) -> None:
    _ok(await admin.patch("/v1/org-settings", json={"conflict_detection": False}))
    conn = await asyncpg.connect(env.pg_dsn)
    try:
        for sql in (
            "UPDATE admin.audit_log SET actor_id = 'x'",
            "DELETE FROM admin.audit_log",
            "TRUNCATE admin.audit_log",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()


async def test_only_admins_read_it(admin: httpx.AsyncClient) -> None:
    r = await admin.get("/v1/audit", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert (await admin.get("/v1/audit", params={"after": str(2**63)})).status_code == 422
    assert (await admin.get("/v1/audit", params={"since": "0001-01-01T00:00:00+14:00"})).status_code == 422
