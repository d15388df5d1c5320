"""The thin path through all four services over real sockets: an admin defines a profile and
publishes it; records are written; a device of the user receives exactly its records; an offline
edit is uploaded on reconnect, applied, and reaches a second device of the same user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from offsync_device.client import Device, SyncRefused
from offsync_device.local_store import LocalStore
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.testing import Stack, eventually

pytestmark = pytest.mark.e2e

ROOT_BU = "00000000-0000-0000-0000-000000000100"


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


async def _setup_org(admin: httpx.AsyncClient) -> None:
    _ok(await admin.patch("/v1/entities/account", json={"offline_enabled": True}))
    _ok(
        await admin.post(
            "/v1/roles",
            json={
                "id": "field",
                "name": "Field worker",
                "read_offline_profile": True,
                "privileges": {"account": {"create": "user", "read": "user", "write": "user", "delete": "user"}},
            },
        )
    )
    for uid in ("u1", "u2"):
        _ok(
            await admin.post(
                "/v1/users", json={"id": uid, "name": uid.upper(), "business_unit_id": ROOT_BU, "role_ids": ["field"]}
            )
        )
    _ok(await admin.post("/v1/profiles", json={"id": "field", "name": "Field sales"}))
    _ok(
        await admin.post(
            "/v1/profiles/field/items", json={"entity": "account", "filter": {"kind": "other", "user": True}}
        )
    )
    _ok(await admin.post("/v1/profiles/field/users", json={"user_ids": ["u1", "u2"]}))
    _ok(await admin.post("/v1/profiles/field/publish"))


async def _device(stack: Stack, admin: httpx.AsyncClient, user: str, device_id: str, tmp: Path) -> Device:
    tok = _ok(await admin.post("/v1/tokens", json={"user_id": user, "audience": "device", "device_id": device_id}))[
        "token"
    ]
    return Device(stack.sync_ws, LocalStore(tmp / f"{device_id}.sqlite"), tok, device_id=device_id)


async def _sync_until(dev: Device, predicate, message: str) -> None:
    async def attempt() -> bool:
        try:
            await dev.sync(timeout=20)
        except SyncRefused:  # the publish may not have reached the bucket store yet
            return False
        return bool(predicate())

    await eventually(attempt, timeout=30, interval=0.2, message=message)


async def test_admin_to_device_and_back(stack: Stack, tmp_path: Path) -> None:
    admin_token = issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with (
        httpx.AsyncClient(base_url=stack.admin_url, headers=headers, timeout=10) as admin,
        httpx.AsyncClient(base_url=stack.records_url, headers=headers, timeout=10) as records,
    ):
        await _setup_org(admin)
        mine = [
            _ok(
                await records.post(
                    "/v1/records/account",
                    json={"attributes": {"name": f"Mine {i}"}, "owner_id": "u1", "business_unit_id": ROOT_BU},
                )
            )["id"]
            for i in range(2)
        ]
        _ok(
            await records.post(
                "/v1/records/account",
                json={"attributes": {"name": "Theirs"}, "owner_id": "u2", "business_unit_id": ROOT_BU},
            )
        )

        phone = await _device(stack, admin, "u1", "phone", tmp_path)
        await _sync_until(phone, lambda: phone.store.count("account") == 2, "the user's 2 accounts on the phone")
        assert sorted(rid for rid, _ in phone.store.list("account")) == sorted(mine)

        # Offline edit, then reconnect: the change is uploaded and applied.
        phone.store.update("account", mine[0], {"name": "Edited offline"})
        assert phone.store.has_pending()
        await phone.sync(timeout=20)
        assert not phone.store.has_pending()
        server = _ok(await records.get(f"/v1/records/account/{mine[0]}"))
        assert server["attributes"]["name"] == "Edited offline"

        # A second device of the same user receives it.
        tablet = await _device(stack, admin, "u1", "tablet", tmp_path)
        await _sync_until(
            tablet,
            lambda: (tablet.store.get("account", mine[0]) or {}).get("name") == "Edited offline",
            "the edit on the second device",
        )
        assert tablet.store.count("account") == 2
