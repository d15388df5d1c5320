"""Revoking a sign-in ends its open websocket sessions promptly (close 4010, through the
sessions.revoked event on the sync-notify topic), not when the access token runs out: an admin
revoking a device, the device signing out, the user changing their password (their other
sign-ins end, the one that changed it stays), an admin resetting it, and a refresh token used
twice (possible theft). The revoked token then
opens no new session either."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from offsync_device.client import Device, SyncRefused
from offsync_device.local_store import LocalStore
from offsync_device.signin import Credentials, SignInRequired
from offsync_shared import protocol as p
from offsync_stack.accounts import create_user, sign_in
from offsync_stack.testing import eventually
from tests.security.conftest import ADMIN_HEADERS, Findings, ok

pytestmark = pytest.mark.e2e
PASSWORD = "revocation-test-password"
PROMPTLY_S = 5.0  # "within a second or two" on a quiet machine; CI machines are busy


async def _session(findings: Findings, token: str, device_id: str) -> ClientConnection:
    """An open session of ``device_id`` that has passed admission (got its welcome)."""

    async def attempt() -> ClientConnection | None:
        ws = await connect(
            findings.stack.sync_ws, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
        )
        await ws.send(p.encode(p.Hello(device_id=device_id)).decode())
        try:
            async with asyncio.timeout(10):
                while True:
                    f = p.decode_server(await ws.recv())
                    if isinstance(f, p.Checkpoint):
                        return ws
        except ConnectionClosed:  # the user's publish may not have reached the buckets yet
            return None

    return await eventually(attempt, timeout=40, interval=0.2, message=f"{device_id} connected")


async def _closed_within(ws: ClientConnection, seconds: float) -> list[Any]:
    frames: list[Any] = []
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(seconds):
            async for raw in ws:
                f = p.decode_server(raw)
                frames.append(f)
                if isinstance(f, p.Ping):
                    await ws.send(p.encode(p.Pong(t=f.t)).decode())
    return frames


async def _refused_at_connect(findings: Findings, token: str, device_id: str) -> int | None:
    ws = await connect(
        findings.stack.sync_ws, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
    )
    await ws.send(p.encode(p.Hello(device_id=device_id)).decode())
    await _closed_within(ws, 10)
    return ws.close_code


Revoke = Callable[[httpx.AsyncClient, str, dict[str, Any], dict[str, Any]], Awaitable[None]]


async def _admin_revokes_device(admin: httpx.AsyncClient, user: str, mine: dict[str, Any], _: dict[str, Any]) -> None:
    ok(await admin.post(f"/v1/users/{user}/devices/{user}-phone/revoke"))


async def _device_signs_out(admin: httpx.AsyncClient, user: str, mine: dict[str, Any], _: dict[str, Any]) -> None:
    ok(await admin.post("/v1/auth/logout", json={"refresh_token": mine["refresh_token"]}, headers={}))


async def _refresh_token_reused(admin: httpx.AsyncClient, user: str, mine: dict[str, Any], _: dict[str, Any]) -> None:
    # The device refreshes, then someone presents the spent token again: the whole sign-in ends.
    body = {"refresh_token": mine["refresh_token"], "device_id": f"{user}-phone"}
    ok(await admin.post("/v1/auth/refresh", json=body, headers={}))
    again = await admin.post("/v1/auth/refresh", json=body, headers={})
    assert again.status_code == 401, again.text


async def _user_changes_password(admin: httpx.AsyncClient, user: str, _: dict[str, Any], other: dict[str, Any]) -> None:
    # From the user's other device: that sign-in stays, every other one ends.
    body = {"current_password": PASSWORD, "new_password": PASSWORD + "-new"}
    headers = {"Authorization": f"Bearer {other['access_token']}"}
    ok(await admin.post("/v1/auth/password", json=body, headers=headers))


async def _admin_resets_password(admin: httpx.AsyncClient, user: str, _: dict[str, Any], __: dict[str, Any]) -> None:
    ok(await admin.put(f"/v1/users/{user}/password", json={"password": PASSWORD + "-reset"}))


# (user, revoke, whether the user's other device (another sign-in) stays connected, drop expected)
CASES: list[tuple[str, Revoke, bool, bool]] = [
    ("sr-device", _admin_revokes_device, True, True),
    ("sr-logout", _device_signs_out, True, False),
    ("sr-reuse", _refresh_token_reused, True, False),
    ("sr-password", _user_changes_password, True, False),
    ("sr-reset", _admin_resets_password, False, False),
]


@pytest.mark.parametrize(
    ("user", "revoke", "other_stays", "dropped"),
    CASES,
    ids=["device-revoked", "signed-out", "refresh-token-reused", "password-changed", "password-reset"],
)
async def test_revoking_a_sign_in_closes_its_open_session_promptly(
    findings: Findings, user: str, revoke: Revoke, other_stays: bool, dropped: bool
) -> None:
    async with httpx.AsyncClient(base_url=findings.stack.admin_url, headers=ADMIN_HEADERS, timeout=15) as admin:
        await create_user(admin, user, password=PASSWORD, role_ids=["field"])
        ok(await admin.post("/v1/profiles/field/users", json={"user_ids": [user]}))
        ok(await admin.post("/v1/profiles/field/publish"))
        mine = await sign_in(findings.stack.admin_url, user, PASSWORD, device_id=f"{user}-phone")
        other = await sign_in(findings.stack.admin_url, user, PASSWORD, device_id=f"{user}-tablet")
        phone = await _session(findings, mine["access_token"], f"{user}-phone")
        tablet = await _session(findings, other["access_token"], f"{user}-tablet")
        try:
            started = time.monotonic()
            await revoke(admin, user, mine, other)
            frames = await _closed_within(phone, 30)
            took = time.monotonic() - started
            assert phone.close_code == p.CLOSE_REVOKED, (phone.close_code, phone.close_reason, frames)
            assert took < PROMPTLY_S, took
            assert any(isinstance(f, p.Drop) for f in frames) == dropped, frames
            # The revoked access token, still within its lifetime, opens no new session.
            assert await _refused_at_connect(findings, mine["access_token"], f"{user}-phone") == p.CLOSE_REVOKED
            if other_stays:
                await _closed_within(tablet, 1.0)
                assert tablet.close_code is None, (tablet.close_code, tablet.close_reason)
            else:
                await _closed_within(tablet, 30)
                assert tablet.close_code == p.CLOSE_REVOKED, (tablet.close_code, tablet.close_reason)
        finally:
            await phone.close()
            await tablet.close()


async def test_the_python_sdk_treats_a_revoked_device_as_signed_out(findings: Findings, tmp_path: Path) -> None:
    """The SDK's live loop ends with SignInRequired on 4010 and forgets its tokens: no silent
    reconnect loop with an access token the server will keep refusing."""
    user = "sr-sdk"
    async with httpx.AsyncClient(base_url=findings.stack.admin_url, headers=ADMIN_HEADERS, timeout=15) as admin:
        await create_user(admin, user, password=PASSWORD, role_ids=["field"])
        ok(await admin.post("/v1/profiles/field/users", json={"user_ids": [user]}))
        ok(await admin.post("/v1/profiles/field/publish"))
        store = LocalStore(tmp_path / "device.sqlite")
        creds = Credentials(store)
        await creds.login(findings.stack.admin_url, user, PASSWORD)
        device = Device(findings.stack.sync_ws, store, creds)
        await eventually(_synced(device), timeout=40, interval=0.3, message="the device synced once")
        stop = asyncio.Event()
        live = asyncio.create_task(device.run(stop))
        try:

            async def connected() -> bool:
                return device.ws is not None

            await eventually(connected, timeout=20, message="the device is connected live")
            ok(await admin.post(f"/v1/users/{user}/devices/{device.device_id}/revoke"))
            with pytest.raises(SignInRequired, match="sign in again"):
                async with asyncio.timeout(PROMPTLY_S):
                    await live
            assert not creds.signed_in
        finally:
            stop.set()
            live.cancel()
            with contextlib.suppress(BaseException):
                await live


def _synced(device: Device) -> Callable[[], Awaitable[bool]]:
    async def attempt() -> bool:
        try:
            await device.sync(max_attempts=1, timeout=10)
        except SyncRefused:  # the publish has not reached the buckets yet
            return False
        return True

    return attempt
