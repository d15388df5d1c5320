"""Security over real sockets, all four services as processes: bad tokens (forged, expired,
wrong audience, malformed, unsigned) are refused on the admin API, the records API and the
device websocket; a non-admin cannot call the admin API; a user without the offline-profile
read privilege cannot sync; a device never receives records outside its user's set and cannot
change records its user may not change."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from offsync_device.client import Device, SyncRefused
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, DEVICE_AUDIENCE, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.testing import Stack, eventually

pytestmark = pytest.mark.e2e

ROOT_BU = "00000000-0000-0000-0000-000000000100"
SECRET = DEV_JWT_SECRET


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


@dataclass
class World:
    stack: Stack
    mine: str  # u1's account
    theirs: str  # u2's account: u1 may read it (organization read) but not write it
    hidden: str  # u2's contact: u1 may not read it at all


@pytest_asyncio.fixture(scope="module")
async def world(stack: Stack) -> AsyncIterator[World]:
    h = {"Authorization": f"Bearer {issue_token(SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}
    async with (
        httpx.AsyncClient(base_url=stack.admin_url, headers=h, timeout=10) as admin,
        httpx.AsyncClient(base_url=stack.records_url, headers=h, timeout=10) as records,
    ):
        for entity in ("account", "contact"):
            _ok(await admin.patch(f"/v1/entities/{entity}", json={"offline_enabled": True}))
        own = {"create": "user", "read": "user", "write": "user", "delete": "user"}
        _ok(
            await admin.post(
                "/v1/roles",
                json={
                    "id": "field",
                    "name": "Field worker",
                    "read_offline_profile": True,
                    "privileges": {"account": {**own, "read": "organization"}, "contact": own},
                },
            )
        )
        _ok(
            await admin.post(
                "/v1/roles",
                json={
                    "id": "noprofile",
                    "name": "No offline",
                    "read_offline_profile": False,
                    "privileges": {"account": {**own, "read": "organization"}},
                },
            )
        )
        for uid, role in (("u1", "field"), ("u2", "field"), ("u3", "noprofile")):
            _ok(
                await admin.post(
                    "/v1/users", json={"id": uid, "name": uid.upper(), "business_unit_id": ROOT_BU, "role_ids": [role]}
                )
            )
        _ok(await admin.post("/v1/profiles", json={"id": "field", "name": "Field"}))
        _ok(
            await admin.post(
                "/v1/profiles/field/items", json={"entity": "account", "filter": {"kind": "other", "user": True}}
            )
        )
        _ok(
            await admin.post(
                "/v1/profiles/field/items", json={"entity": "contact", "filter": {"kind": "other", "user": True}}
            )
        )
        _ok(await admin.post("/v1/profiles/field/users", json={"user_ids": ["u1", "u2", "u3"]}))
        _ok(await admin.post("/v1/profiles/field/publish"))

        def new(e: str, owner: str, name: str):
            return records.post(
                f"/v1/records/{e}",
                json={
                    "attributes": {"name" if e == "account" else "lastname": name},
                    "owner_id": owner,
                    "business_unit_id": ROOT_BU,
                },
            )

        mine = _ok(await new("account", "u1", "Mine"))["id"]
        theirs = _ok(await new("account", "u2", "Theirs"))["id"]
        hidden = _ok(await new("contact", "u2", "Hidden"))["id"]
        yield World(stack, mine, theirs, hidden)


# ------------------------------------------------------------------------- bad tokens ----


def _bad_token(kind: str, audience: str) -> str | None:
    now = time.time()
    if kind == "missing":
        return None
    if kind == "garbage":
        return "not.a.jwt"
    if kind == "forged":
        return issue_token("not-the-server-secret-at-all-000000", BOOTSTRAP_ADMIN_USER_ID, audience, device_id="d")
    if kind == "expired":
        return issue_token(SECRET, BOOTSTRAP_ADMIN_USER_ID, audience, ttl_seconds=60, now=now - 3600, device_id="d")
    if kind == "wrong_audience":
        other = DEVICE_AUDIENCE if audience == ADMIN_AUDIENCE else ADMIN_AUDIENCE
        return issue_token(SECRET, BOOTSTRAP_ADMIN_USER_ID, other, device_id="d")
    if kind == "unsigned":  # alg "none": must never be accepted
        claims = {"sub": BOOTSTRAP_ADMIN_USER_ID, "aud": audience, "iss": "offsync", "exp": int(now + 600), "did": "d"}
        return jwt.encode(claims, key="", algorithm="none")  # "none" signs with no key
    if kind == "wrong_issuer":
        return issue_token(SECRET, BOOTSTRAP_ADMIN_USER_ID, audience, issuer="someone-else", device_id="d")
    raise AssertionError(kind)


BAD = ["missing", "garbage", "forged", "expired", "wrong_audience", "unsigned", "wrong_issuer"]


@pytest.mark.parametrize("kind", BAD, ids=BAD)
@pytest.mark.parametrize("api", ["admin", "records"], ids=["admin-api", "records-api"])
async def test_bad_token_refused_on_http(world: World, api: str, kind: str) -> None:
    tok = _bad_token(kind, ADMIN_AUDIENCE)
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    base = world.stack.admin_url if api == "admin" else world.stack.records_url
    path = "/v1/users" if api == "admin" else f"/v1/records/account/{world.mine}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.get(path, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthenticated"
        # A write is refused the same way and changes nothing.
        w = await (
            c.post("/v1/users", json={"id": "evil", "name": "x", "business_unit_id": ROOT_BU}, headers=headers)
            if api == "admin"
            else c.patch(path, json={"attributes": {"name": "pwned"}}, headers=headers)
        )
        assert w.status_code == 401, w.text
    async with httpx.AsyncClient(base_url=world.stack.records_url, timeout=10, headers=_admin_headers()) as c:
        assert _ok(await c.get(f"/v1/records/account/{world.mine}"))["attributes"]["name"] == "Mine"


async def _ws_close(
    world: World, token: str | None, *, device_id: str = "d", in_hello: bool = False
) -> tuple[int | None, str]:
    headers = {"Authorization": f"Bearer {token}"} if token and not in_hello else None
    async with connect(world.stack.sync_ws, additional_headers=headers, ping_interval=None, open_timeout=10) as ws:
        await ws.send(p.encode(p.Hello(device_id=device_id, token=token if in_hello else None)).decode())
        frames = []
        try:
            async with asyncio.timeout(15):
                async for raw in ws:
                    frames.append(p.decode_server(raw))
        except ConnectionClosed:
            pass
        assert not any(isinstance(f, (p.Welcome, p.Ops)) for f in frames), frames
        return ws.close_code, ws.close_reason or ""


@pytest.mark.parametrize("in_hello", [False, True], ids=["header", "hello-frame"])
@pytest.mark.parametrize("kind", BAD, ids=BAD)
async def test_bad_token_refused_on_device_websocket(world: World, kind: str, in_hello: bool) -> None:
    tok = _bad_token(kind, DEVICE_AUDIENCE)
    code, reason = await _ws_close(world, tok, in_hello=in_hello)
    assert code == p.CLOSE_UNAUTHENTICATED, (code, reason)


def _admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}


@pytest.mark.parametrize("api", ["admin", "records"], ids=["admin-api", "records-api"])
async def test_device_token_of_an_admin_is_refused_on_http(world: World, api: str) -> None:
    """A stolen device token of the bootstrap administrator opens no HTTP API."""
    tok = issue_token(SECRET, BOOTSTRAP_ADMIN_USER_ID, DEVICE_AUDIENCE, device_id="phone")
    base = world.stack.admin_url if api == "admin" else world.stack.records_url
    path = "/v1/roles" if api == "admin" else "/v1/records/account"
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        r = await c.get(path, headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", r.text


@pytest.mark.parametrize("path", ["/v1/users", "/v1/roles", "/v1/tokens"], ids=["users", "roles", "mint-token"])
async def test_non_admin_user_is_forbidden_on_admin_api(world: World, path: str) -> None:
    tok = issue_token(SECRET, "u1", ADMIN_AUDIENCE)
    async with httpx.AsyncClient(
        base_url=world.stack.admin_url, timeout=10, headers={"Authorization": f"Bearer {tok}"}
    ) as c:
        if path == "/v1/tokens":  # minting a token for the administrator must be impossible
            r = await c.post(path, json={"user_id": BOOTSTRAP_ADMIN_USER_ID, "audience": "admin"})
        else:
            r = await c.get(path)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text


async def test_unknown_user_token_is_refused(world: World) -> None:
    tok = issue_token(SECRET, "nobody-" + uuid.uuid4().hex, DEVICE_AUDIENCE, device_id="d")
    code, _ = await _ws_close(world, tok)
    assert code in (p.CLOSE_UNAUTHENTICATED, p.CLOSE_FORBIDDEN)


# ------------------------------------------------------------------- authorization ----


async def test_user_without_offline_read_privilege_cannot_sync(world: World) -> None:
    tok = issue_token(SECRET, "u3", DEVICE_AUDIENCE, device_id="u3-phone")
    code, reason = await _ws_close(world, tok, device_id="u3-phone")
    assert code == p.CLOSE_FORBIDDEN, (code, reason)


async def test_token_of_another_device_is_refused(world: World) -> None:
    tok = issue_token(SECRET, "u1", DEVICE_AUDIENCE, device_id="u1-phone")
    code, reason = await _ws_close(world, tok, device_id="u1-tablet")
    assert code == p.CLOSE_FORBIDDEN, (code, reason)


async def _synced_device(world: World, tmp: Path, user: str, device_id: str) -> Device:
    tok = issue_token(SECRET, user, DEVICE_AUDIENCE, device_id=device_id)
    dev = Device(world.stack.sync_ws, LocalStore(tmp / f"{device_id}.sqlite"), tok, device_id=device_id)

    async def attempt() -> bool:
        try:
            await dev.sync(timeout=20)
        except SyncRefused:  # the publish may not have reached the bucket store yet
            return False
        return dev.store.count("account") >= 1

    await eventually(attempt, timeout=40, interval=0.2, message=f"{user}'s device synced")
    return dev


async def test_device_receives_only_its_users_records(world: World, tmp_path: Path) -> None:
    dev = await _synced_device(world, tmp_path, "u1", "u1-iso")
    assert [rid for rid, _ in dev.store.list("account")] == [world.mine]
    assert dev.store.count("contact") == 0
    # A server write to another user's record later never reaches this device either.
    async with httpx.AsyncClient(base_url=world.stack.records_url, timeout=10, headers=_admin_headers()) as c:
        _ok(await c.patch(f"/v1/records/account/{world.theirs}", json={"attributes": {"name": "Theirs v2"}}))
        _ok(await c.patch(f"/v1/records/account/{world.mine}", json={"attributes": {"name": "Mine v2"}}))

    async def caught_up() -> bool:
        await dev.sync(timeout=20)
        return (dev.store.get("account", world.mine) or {}).get("name") == "Mine v2"

    await eventually(caught_up, timeout=30, interval=0.2, message="own change arrives")
    assert [rid for rid, _ in dev.store.list("account")] == [world.mine]
    assert dev.store.get("account", world.theirs) is None


async def _upload(world: World, user: str, device_id: str, changes: list[p.Change]) -> p.Result:
    tok = issue_token(SECRET, user, DEVICE_AUDIENCE, device_id=device_id)
    async with connect(
        world.stack.sync_ws, additional_headers={"Authorization": f"Bearer {tok}"}, ping_interval=None
    ) as ws:
        await ws.send(p.encode(p.Hello(device_id=device_id)).decode())
        await ws.send(p.encode(p.Upload(str(uuid.uuid4()), tuple(changes))).decode())
        async with asyncio.timeout(30):
            while True:
                f = p.decode_server(await ws.recv())
                if isinstance(f, p.Result):
                    return f
                if isinstance(f, p.Ping):
                    await ws.send(p.encode(p.Pong(t=f.t)).decode())


async def test_device_cannot_change_another_users_records(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.stack.records_url, timeout=10, headers=_admin_headers()) as c:
        theirs_v = _ok(await c.get(f"/v1/records/account/{world.theirs}"))["version"]
        hidden_v = _ok(await c.get(f"/v1/records/contact/{world.hidden}"))["version"]
    result = await _upload(
        world,
        "u1",
        "u1-evil",
        [
            p.Change(0, "update", "account", world.theirs, theirs_v, {"name": "pwned"}),
            p.Change(1, "delete", "account", world.theirs, theirs_v),
            p.Change(2, "update", "contact", world.hidden, hidden_v, {"lastname": "pwned"}),
            p.Change(3, "create", "account", world.theirs, None, {"name": "id squat"}),
            p.Change(4, "delete", "contact", world.hidden, hidden_v),
        ],
    )
    by_seq = {r.seq: r for r in result.results}
    assert [by_seq[i].status for i in range(5)] == ["rejected"] * 5, result
    assert by_seq[0].code == by_seq[1].code == by_seq[3].code == "forbidden", result
    # A record u1 may not read is answered exactly like a missing one: nothing leaks.
    assert by_seq[2].code == by_seq[4].code == "not_found", result
    assert all(r.record is None and r.version is None for r in result.results), result
    async with httpx.AsyncClient(base_url=world.stack.records_url, timeout=10, headers=_admin_headers()) as c:
        t = _ok(await c.get(f"/v1/records/account/{world.theirs}"))
        h = _ok(await c.get(f"/v1/records/contact/{world.hidden}"))
    assert t["version"] == theirs_v and t["attributes"]["name"] != "pwned" and not t.get("deleted")
    assert h["version"] == hidden_v and h["attributes"]["lastname"] == "Hidden" and not h.get("deleted")


async def test_records_api_enforces_the_callers_roles(world: World) -> None:
    u1 = {"Authorization": f"Bearer {issue_token(SECRET, 'u1', ADMIN_AUDIENCE)}"}
    async with httpx.AsyncClient(base_url=world.stack.records_url, timeout=10, headers=u1) as c:
        assert (await c.get(f"/v1/records/contact/{world.hidden}")).status_code == 404
        r = await c.patch(f"/v1/records/account/{world.theirs}", json={"attributes": {"name": "pwned"}})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        listed = _ok(await c.get("/v1/records/contact"))
        assert world.hidden not in [i["id"] for i in listed["items"]]
