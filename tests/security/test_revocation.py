"""Access revoked while a device is connected: the open session ends with the close code a
new connection would get, the device is told to drop what it holds, and no record written
afterwards reaches it. Covers disabling the user, taking away the role that grants
read_offline_profile, and removing the user from the profile (republished), through the API
(whatever order the events then take across topics and partitions) and, deterministically, as
an admin change publish-service has not seen yet (the record reaches the buckets first)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from offsync_shared import protocol as p
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, DEVICE_AUDIENCE, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.testing import Stack, eventually

pytestmark = pytest.mark.e2e

ROOT_BU = "00000000-0000-0000-0000-000000000100"
ADMIN = {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}
USERS = ("r-disable", "r-role", "r-profile", "a-disable", "a-role", "a-profile", "a-pending")


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


@pytest_asyncio.fixture(scope="module")
async def org(stack: Stack) -> AsyncIterator[Stack]:
    async with (
        httpx.AsyncClient(base_url=stack.admin_url, headers=ADMIN, timeout=10) as admin,
        httpx.AsyncClient(base_url=stack.records_url, headers=ADMIN, timeout=10) as records,
    ):
        _ok(await admin.patch("/v1/entities/account", json={"offline_enabled": True}))
        own = {"create": "user", "read": "user", "write": "user", "delete": "user"}
        _ok(
            await admin.post(
                "/v1/roles",
                json={"id": "rv-field", "name": "Field", "read_offline_profile": True, "privileges": {"account": own}},
            )
        )
        _ok(
            await admin.post(
                "/v1/roles",
                json={"id": "rv-desk", "name": "Desk", "read_offline_profile": False, "privileges": {"account": own}},
            )
        )
        for uid in USERS:  # r-role also holds rv-desk, so it keeps read access to its accounts
            roles = ["rv-field", "rv-desk"] if uid in ("r-role", "a-role") else ["rv-field"]
            _ok(
                await admin.post(
                    "/v1/users", json={"id": uid, "name": uid, "business_unit_id": ROOT_BU, "role_ids": roles}
                )
            )
        _ok(await admin.post("/v1/profiles", json={"id": "rv", "name": "Revocation"}))
        _ok(
            await admin.post(
                "/v1/profiles/rv/items", json={"entity": "account", "filter": {"kind": "other", "user": True}}
            )
        )
        _ok(await admin.post("/v1/profiles/rv/users", json={"user_ids": list(USERS)}))
        _ok(await admin.post("/v1/profiles/rv/publish"))
        for uid in USERS:
            _ok(await records.post("/v1/records/account", json={"attributes": {"name": f"{uid} 1"}, "owner_id": uid}))
        yield stack


async def _frames_until_checkpoint(ws: ClientConnection) -> list[Any]:
    seen: list[Any] = []
    async with asyncio.timeout(20):
        while True:
            f = p.decode_server(await ws.recv())
            seen.append(f)
            if isinstance(f, p.Ping):
                await ws.send(p.encode(p.Pong(t=f.t)).decode())
            if isinstance(f, p.Checkpoint):
                return seen


async def _connected(stack: Stack, user: str) -> ClientConnection:
    """A device of ``user`` that has downloaded its first record and sits at a checkpoint."""
    tok = issue_token(DEV_JWT_SECRET, user, DEVICE_AUDIENCE, device_id=f"{user}-phone")

    async def attempt() -> ClientConnection | None:
        ws = await connect(stack.sync_ws, additional_headers={"Authorization": f"Bearer {tok}"}, ping_interval=None)
        await ws.send(p.encode(p.Hello(device_id=f"{user}-phone")).decode())
        try:
            frames = await _frames_until_checkpoint(ws)
        except ConnectionClosed:  # the publish may not have reached the bucket store yet
            return None
        if any(isinstance(f, p.Ops) and f.ops for f in frames):
            return ws
        await ws.close()
        return None

    return await eventually(attempt, timeout=40, interval=0.2, message=f"{user}'s device synced")


async def _disable(admin: httpx.AsyncClient, user: str) -> None:
    _ok(await admin.patch(f"/v1/users/{user}", json={"enabled": False}))


async def _drop_offline_role(admin: httpx.AsyncClient, user: str) -> None:
    _ok(await admin.delete(f"/v1/users/{user}/roles/rv-field"))


async def _remove_from_profile(admin: httpx.AsyncClient, user: str) -> None:
    _ok(await admin.delete(f"/v1/profiles/rv/users/{user}"))
    _ok(await admin.post("/v1/profiles/rv/publish"))


Revoke = Callable[[httpx.AsyncClient, str], Awaitable[None]]
CASES: list[tuple[str, Revoke, int]] = [
    ("r-disable", _disable, p.CLOSE_FORBIDDEN),
    ("r-role", _drop_offline_role, p.CLOSE_FORBIDDEN),
    ("r-profile", _remove_from_profile, p.CLOSE_NO_PROFILE),
]


@pytest.mark.parametrize(("user", "revoke", "close_code"), CASES, ids=["user-disabled", "role-removed", "left-profile"])
async def test_revoked_access_ends_the_open_session(org: Stack, user: str, revoke: Revoke, close_code: int) -> None:
    ws = await _connected(org, user)
    async with (
        httpx.AsyncClient(base_url=org.admin_url, headers=ADMIN, timeout=10) as admin,
        httpx.AsyncClient(base_url=org.records_url, headers=ADMIN, timeout=10) as records,
    ):
        await revoke(admin, user)
        _ok(await records.post("/v1/records/account", json={"attributes": {"name": f"{user} after"}, "owner_id": user}))
    after: list[Any] = []
    try:
        async with asyncio.timeout(30):
            async for raw in ws:
                f = p.decode_server(raw)
                after.append(f)
                if isinstance(f, p.Ping):
                    await ws.send(p.encode(p.Pong(t=f.t)).decode())
    except ConnectionClosed:
        pass
    assert ws.close_code == close_code, (ws.close_code, ws.close_reason, after)
    assert any(isinstance(f, p.Drop) for f in after), after
    leaked = [op for f in after if isinstance(f, p.Ops) for op in f.ops]
    assert not leaked, leaked


# Admin changes made in the admin schema only, as profile-service commits them, with no event:
# publish-service keeps the user's buckets (it has not seen the change), so the record written next
# lands in a bucket the user still holds: exactly the order a slow admin event produces.
AHEAD: list[tuple[str, str, int]] = [
    ("a-disable", "UPDATE admin.users SET enabled = false WHERE id = $1", p.CLOSE_FORBIDDEN),
    ("a-role", "DELETE FROM admin.user_roles WHERE user_id = $1 AND role_id = 'rv-field'", p.CLOSE_FORBIDDEN),
    ("a-profile", "DELETE FROM admin.published_profile_users WHERE user_id = $1", p.CLOSE_NO_PROFILE),
]


async def _frames_until_closed(ws: ClientConnection, timeout: float) -> list[Any]:
    """Frames until the server closes, or until ``timeout`` (the socket then stays open)."""
    after: list[Any] = []
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(timeout):
            async for raw in ws:
                f = p.decode_server(raw)
                after.append(f)
                if isinstance(f, p.Ping):
                    await ws.send(p.encode(p.Pong(t=f.t)).decode())
    return after


@pytest.mark.parametrize(("user", "sql", "close_code"), AHEAD, ids=["user-disabled", "role-removed", "left-profile"])
async def test_a_record_reaching_the_buckets_before_the_admin_change_is_not_sent(
    org: Stack, user: str, sql: str, close_code: int
) -> None:
    ws = await _connected(org, user)
    conn = await asyncpg.connect(org.env.pg_dsn)
    try:
        await conn.execute(sql, user)
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=org.records_url, headers=ADMIN, timeout=10) as records:
        _ok(await records.post("/v1/records/account", json={"attributes": {"name": f"{user} after"}, "owner_id": user}))
    after = await _frames_until_closed(ws, 30)
    assert ws.close_code == close_code, (ws.close_code, ws.close_reason, after)
    assert any(isinstance(f, p.Drop) for f in after), after
    leaked = [op for f in after if isinstance(f, p.Ops) for op in f.ops]
    assert not leaked, leaked


async def test_ops_wait_while_a_publish_is_not_applied_yet(org: Stack) -> None:
    """The admin published a new version of the user's profile that publish-service has not
    applied: the old buckets may hold what it takes away, so nothing is sent until it has."""
    user = "a-pending"
    ws = await _connected(org, user)
    conn = await asyncpg.connect(org.env.pg_dsn)
    try:
        await conn.execute("UPDATE admin.published_profile_users SET version = version + 1 WHERE user_id = $1", user)
        async with httpx.AsyncClient(base_url=org.records_url, headers=ADMIN, timeout=10) as records:
            _ok(
                await records.post(
                    "/v1/records/account", json={"attributes": {"name": f"{user} held"}, "owner_id": user}
                )
            )

            async def op_written() -> bool:
                n = await conn.fetchval(
                    """SELECT count(*) FROM sync.bucket_ops o JOIN sync.user_buckets ub ON ub.bucket_id = o.bucket_id
                       WHERE ub.user_id = $1 AND o.record_id IN (SELECT id FROM data.records
                       WHERE attributes->>'name' = $2)""",
                    user,
                    f"{user} held",
                )
                return bool(n)

            await eventually(op_written, timeout=20, message="the record reached the user's bucket")
            # Several hold rounds (0.5 s each) pass with the op in the bucket: none of it is sent.
            held = await _frames_until_closed(ws, 2.5)
            assert ws.close_code is None, (ws.close_code, ws.close_reason)
            assert not [op for f in held if isinstance(f, p.Ops) for op in f.ops], held
        # publish-service "catches up": the versions agree again and the op goes out.
        await conn.execute("UPDATE admin.published_profile_users SET version = version - 1 WHERE user_id = $1", user)
        sent: list[p.OpRow] = []
        async with asyncio.timeout(20):
            while not sent:
                f = p.decode_server(await ws.recv())
                if isinstance(f, p.Ping):
                    await ws.send(p.encode(p.Pong(t=f.t)).decode())
                if isinstance(f, p.Ops):
                    sent += [op for op in f.ops if op[2] == "put"]
        assert sent
    finally:
        await conn.close()
        await ws.close()
