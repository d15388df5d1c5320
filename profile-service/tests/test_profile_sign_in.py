"""Sign-in against the real database: login, refresh rotation and theft detection, logout,
passwords set by an admin and changed by their owner, the rate limit, and revocation when a
user is disabled, re-created, loses a privilege or has a device revoked."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from profile_harness import Service

from offsync_shared.auth import ADMIN_AUDIENCE, DEVICE_AUDIENCE, verify_token
from offsync_shared.errors import Unauthenticated
from offsync_stack.accounts import ADMIN_USERNAME, create_user
from offsync_stack.infra import Infra
from offsync_stack.testing import TEST_ADMIN_PASSWORD, make_env, release_env
from profile_service import identity
from profile_service.app import create_app
from profile_service.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@pytest_asyncio.fixture(scope="module")
async def svc(infra: Infra) -> AsyncIterator[Service]:
    env = await make_env(infra, "auth")
    settings = Settings(**env.settings_kwargs(), login_max_failures_per_user=3, login_max_failures_per_address=8)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Service(app, settings, env)
    await release_env(infra, env)


@pytest_asyncio.fixture(scope="module")
async def admin(svc: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with svc.client(svc.token()) as c:
        roles = [
            {"id": "field", "name": "Field", "read_offline_profile": True},
            {"id": "desk", "name": "Desk"},
            {"id": "boss", "name": "Boss", "is_admin": True},
        ]
        for role in roles:
            assert (await c.post("/v1/roles", json=role)).status_code == 201
        yield c


def _addr(svc: Service, address: str) -> httpx.AsyncClient:
    """A client calling from ``address`` (the rate limit counts per client address)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=svc.app, client=(address, 1234)), base_url="http://profile"
    )


async def _login(svc: Service, username: str, password: str, *, address: str = "10.0.0.1", **kw: Any) -> httpx.Response:
    body = {"username": username, "password": password, "device_id": kw.pop("device_id", "phone"), **kw}
    async with _addr(svc, address) as c:
        return await c.post("/v1/auth/login", json=body)


async def _refresh(svc: Service, token: str, device_id: str | None = "phone") -> httpx.Response:
    async with svc.client() as c:
        return await c.post("/v1/auth/refresh", json={"refresh_token": token, "device_id": device_id})


async def test_login_answers_a_device_token_pair(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "ada", password=PASSWORD, username="Ada", role_ids=["field"])
    resp = await _login(svc, "ada", PASSWORD)  # usernames match regardless of case
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer" and body["user_id"] == "ada" and body["is_admin"] is False
    assert 0 < body["expires_in"] < body["refresh_expires_in"]
    p = verify_token(svc.settings.jwt_secret, body["access_token"], DEVICE_AUDIENCE)
    assert (p.user_id, p.device_id) == ("ada", "phone") and p.generation and p.session_id
    user = (await admin.get("/v1/users/ada")).json()
    assert user["username"] == "Ada" and "password" not in user and "password_hash" not in user


async def test_wrong_password_and_unknown_user_get_the_same_401(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "bob", password=PASSWORD, role_ids=["field"])
    wrong = await _login(svc, "bob", "not the password", address="10.0.1.1")
    unknown = await _login(svc, "nobody", "not the password", address="10.0.1.2")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "unauthenticated"


async def test_refresh_rotates_and_reuse_revokes_the_chain(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "cy", password=PASSWORD, role_ids=["field"])
    first = (await _login(svc, "cy", PASSWORD)).json()
    second = await _refresh(svc, first["refresh_token"])
    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] != first["refresh_token"]
    third = await _refresh(svc, second.json()["refresh_token"])
    assert third.status_code == 200
    # The first token, spent, shows up again: someone copied it. Every token of the chain dies.
    reuse = await _refresh(svc, first["refresh_token"])
    assert reuse.status_code == 401 and "already used" in reuse.json()["error"]["message"]
    assert (await _refresh(svc, third.json()["refresh_token"])).status_code == 401
    # Another sign-in of the same user is untouched.
    other = (await _login(svc, "cy", PASSWORD, device_id="tablet")).json()
    assert (await _refresh(svc, other["refresh_token"], "tablet")).status_code == 200


async def test_refresh_for_another_device_revokes(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "dee", password=PASSWORD, role_ids=["field"])
    pair = (await _login(svc, "dee", PASSWORD)).json()
    assert (await _refresh(svc, pair["refresh_token"], "stolen-laptop")).status_code == 401
    assert (await _refresh(svc, pair["refresh_token"], "phone")).status_code == 401


async def test_logout_revokes_the_chain(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "eve", password=PASSWORD, role_ids=["field"])
    pair = (await _login(svc, "eve", PASSWORD)).json()
    async with svc.client() as c:
        out = await c.post("/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert out.status_code == 200 and out.json() == {"revoked": 1}
    assert (await _refresh(svc, pair["refresh_token"])).status_code == 401


async def test_admin_resets_a_password(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "fay", password=PASSWORD, role_ids=["field"])
    pair = (await _login(svc, "fay", PASSWORD)).json()
    short = await admin.put("/v1/users/fay/password", json={"password": "short"})
    assert short.status_code == 422 and short.json()["error"]["field"] == "password"
    reset = await admin.put("/v1/users/fay/password", json={"password": "a brand new one"})
    assert reset.status_code == 200 and reset.json()["revoked"] == 1
    assert (await _refresh(svc, pair["refresh_token"])).status_code == 401
    assert (await _login(svc, "fay", PASSWORD, address="10.0.2.1")).status_code == 401
    assert (await _login(svc, "fay", "a brand new one")).status_code == 200
    assert (await admin.put("/v1/users/nope/password", json={"password": "whatever123"})).status_code == 404


async def test_a_user_changes_their_own_password(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "gus", password=PASSWORD, role_ids=["field"])
    mine = (await _login(svc, "gus", PASSWORD)).json()
    elsewhere = (await _login(svc, "gus", PASSWORD, device_id="tablet")).json()
    async with svc.client(mine["access_token"]) as c:
        bad = await c.post("/v1/auth/password", json={"current_password": "wrong one!", "new_password": "new secret 1"})
        assert bad.status_code == 401
        ok = await c.post("/v1/auth/password", json={"current_password": PASSWORD, "new_password": "new secret 1"})
        assert ok.status_code == 200, ok.text
    async with svc.client() as c:
        anon = await c.post("/v1/auth/password", json={"current_password": PASSWORD, "new_password": "new secret 2"})
        assert anon.status_code == 401
    assert (await _refresh(svc, mine["refresh_token"])).status_code == 200  # the caller's sign-in stays
    assert (await _refresh(svc, elsewhere["refresh_token"], "tablet")).status_code == 401
    assert (await _login(svc, "gus", "new secret 1")).status_code == 200


async def test_failed_logins_are_rate_limited_per_user(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "hal", password=PASSWORD, role_ids=["field"])
    for i in range(3):  # the limit in this module is 3 failures per user
        assert (await _login(svc, "hal", "guess number", address=f"10.1.0.{i}")).status_code == 401
    limited = await _login(svc, "hal", PASSWORD, address="10.1.1.1")  # even the right password waits
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 300


async def test_failed_logins_are_rate_limited_per_address(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "ivy", password=PASSWORD, role_ids=["field"])
    for i in range(8):  # 8 failures from one address, each for another username
        assert (await _login(svc, f"spray{i}", "guess number", address="10.9.9.9")).status_code == 401
    limited = await _login(svc, "ivy", PASSWORD, address="10.9.9.9")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await _login(svc, "ivy", PASSWORD, address="10.9.9.10")).status_code == 200


async def test_a_device_sign_in_needs_the_offline_privilege(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "jon", password=PASSWORD, role_ids=["desk"])
    resp = await _login(svc, "jon", PASSWORD)
    assert resp.status_code == 403 and "read_offline_profile" in resp.json()["error"]["message"]
    assert (await _login(svc, "jon", PASSWORD, audience="admin", device_id=None)).status_code == 403
    no_device = await _login(svc, "jon", PASSWORD, device_id=None)
    assert no_device.status_code == 422


async def test_bootstrap_admin_signs_in_and_calls_the_admin_api(svc: Service) -> None:
    resp = await _login(svc, ADMIN_USERNAME, TEST_ADMIN_PASSWORD, audience="admin", device_id=None)
    assert resp.status_code == 200, resp.text
    assert resp.json()["is_admin"] is True
    async with svc.client(resp.json()["access_token"]) as c:
        assert (await c.get("/v1/users")).status_code == 200


async def test_usernames_are_unique_regardless_of_case(admin: httpx.AsyncClient) -> None:
    await create_user(admin, "kim", password=PASSWORD, username="Kim")
    clash = await admin.post(
        "/v1/users",
        json={"id": "kim2", "name": "k", "username": "KIM", "business_unit_id": "00000000-0000-0000-0000-000000000100"},
    )
    assert clash.status_code == 409 and clash.json()["error"]["field"] == "username"
    assert (await admin.patch("/v1/users/kim", json={"username": "kimberly"})).json()["username"] == "kimberly"


@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(lambda a: a.patch("/v1/users/lee", json={"enabled": False}), id="disabled"),
        pytest.param(lambda a: a.delete("/v1/users/lee/roles/field2"), id="offline-role-removed"),
        pytest.param(lambda a: a.patch("/v1/roles/field2", json={"read_offline_profile": False}), id="role-changed"),
        pytest.param(lambda a: a.post("/v1/users/lee/devices/phone/revoke"), id="device-revoked"),
    ],
)
async def test_lost_access_revokes_refresh_tokens_for_good(svc: Service, admin: httpx.AsyncClient, revoke: Any) -> None:
    await admin.delete("/v1/users/lee")
    await admin.delete("/v1/roles/field2")
    role = {"id": "field2", "name": "Field 2", "read_offline_profile": True}
    assert (await admin.post("/v1/roles", json=role)).status_code == 201
    await create_user(admin, "lee", password=PASSWORD, role_ids=["field2"])
    pair = (await _login(svc, "lee", PASSWORD)).json()
    resp = await revoke(admin)
    assert resp.status_code < 300, resp.text
    # Giving the access back does not bring the old sign-in back.
    await admin.patch("/v1/users/lee", json={"enabled": True})
    await admin.put("/v1/users/lee/roles/field2")
    await admin.patch("/v1/roles/field2", json={"read_offline_profile": True})
    assert (await _refresh(svc, pair["refresh_token"])).status_code == 401
    assert (await _login(svc, "lee", PASSWORD)).status_code == 200


async def test_a_re_created_user_does_not_inherit_old_tokens(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "max", password=PASSWORD, role_ids=["boss", "field"])
    old = (await _login(svc, "max", PASSWORD, audience="admin", device_id=None)).json()
    async with svc.client(old["access_token"]) as c:
        assert (await c.get("/v1/users")).status_code == 200
    assert (await admin.delete("/v1/users/max")).status_code == 204
    await create_user(admin, "max", password=PASSWORD, role_ids=["boss", "field"])
    async with svc.client(old["access_token"]) as c:
        assert (await c.get("/v1/users")).status_code == 403  # same id, another person
    assert (await _refresh(svc, old["refresh_token"], None)).status_code == 401
    new = (await _login(svc, "max", PASSWORD, audience="admin", device_id=None)).json()
    assert (
        verify_token(svc.settings.jwt_secret, new["access_token"], ADMIN_AUDIENCE).generation
        != verify_token(svc.settings.jwt_secret, old["access_token"], ADMIN_AUDIENCE).generation
    )


async def test_authenticate_is_callable_from_other_code(svc: Service, admin: httpx.AsyncClient) -> None:
    await create_user(admin, "nia", password=PASSWORD, role_ids=["boss"])
    async with svc.app.state.runtime.pool.acquire() as conn:
        who = await identity.authenticate(conn, "NIA", PASSWORD, env="test")
    assert who.user_id == "nia" and who.is_admin and not who.offline
    async with svc.app.state.runtime.pool.acquire() as conn:
        for username, password in (("nia\ud800", PASSWORD), ("nia", PASSWORD + "\ud800"), ("ni\x00a", PASSWORD)):
            with pytest.raises(Unauthenticated):
                await identity.authenticate(conn, username, password, env="test")


async def test_passwords_never_reach_the_logs(
    svc: Service, admin: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "never-log-this-password-42"
    with caplog.at_level(logging.DEBUG):
        await create_user(admin, "oli", password=secret, role_ids=["field"])
        await _login(svc, "oli", secret)
        await _login(svc, "oli", secret + "x", address="10.3.3.3")
        await admin.put("/v1/users/oli/password", json={"password": secret + "y"})
    assert secret not in caplog.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/auth/login", {"username": "\ud800", "password": "whatever-it-is", "device_id": "d"}),
        ("/v1/auth/login", {"username": "ada", "password": "\ud800bcdefghij", "device_id": "d"}),
        ("/v1/auth/login", {"username": "ada\x00", "password": "whatever-it-is", "device_id": "d"}),
        ("/v1/auth/refresh", {"refresh_token": "\udfff", "device_id": "d"}),
        ("/v1/auth/logout", {"refresh_token": "x" * 600}),
        ("/v1/auth/oidc", {"token": "not-a-jwt", "device_id": "d"}),
    ],
    ids=["surrogate-username", "surrogate-password", "nul-username", "surrogate-refresh", "long-refresh", "oidc-off"],
)
async def test_bad_sign_in_input_is_a_4xx(svc: Service, path: str, body: dict[str, Any]) -> None:
    async with svc.client() as c:  # json.dumps escapes lone surrogates, as a hostile client would send them
        resp = await c.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text


async def test_bad_user_credentials_on_create_are_a_422(admin: httpx.AsyncClient) -> None:
    root = "00000000-0000-0000-0000-000000000100"
    for extra in ({"password": "\ud800bcdefghij"}, {"username": "\ud800"}, {"password": "short"}):
        body = json.dumps({"id": "bad", "name": "b", "business_unit_id": root, **extra})
        resp = await admin.post("/v1/users", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 422, resp.text
