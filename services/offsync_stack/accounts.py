"""Test helpers for sign-in: create a user who has a password, and sign in over HTTP.

    user = await create_user(admin, "u1", password="correct horse", role_ids=["field"])
    tokens = await sign_in(stack.admin_url, "u1", "correct horse", device_id="phone")

The bootstrap admin of every test stack signs in as ``admin`` / ``TEST_ADMIN_PASSWORD``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import httpx

from offsync_stack.testing import TEST_ADMIN_PASSWORD

ROOT_BUSINESS_UNIT_ID = "00000000-0000-0000-0000-000000000100"
ADMIN_USERNAME = "admin"

__all__ = ["ADMIN_USERNAME", "TEST_ADMIN_PASSWORD", "create_user", "sign_in"]


async def create_user(
    admin: httpx.AsyncClient,
    user_id: str,
    *,
    password: str,
    username: str | None = None,
    role_ids: Sequence[str] = (),
    team_ids: Sequence[str] = (),
    business_unit_id: str = ROOT_BUSINESS_UNIT_ID,
) -> dict[str, Any]:
    """POST /v1/users with a password (``admin`` is a client of the admin API holding an admin token)."""
    body = {
        "id": user_id,
        "name": user_id,
        "username": username or user_id,
        "password": password,
        "business_unit_id": business_unit_id,
        "role_ids": list(role_ids),
        "team_ids": list(team_ids),
    }
    resp = await admin.post("/v1/users", json=body)
    if resp.status_code != 201:
        raise AssertionError(f"creating user {user_id!r}: {resp.status_code} {resp.text}")
    result: dict[str, Any] = resp.json()
    return result


async def sign_in(
    admin_url: str,
    username: str,
    password: str,
    *,
    device_id: str | None = None,
    audience: Literal["device", "admin"] = "device",
) -> dict[str, Any]:
    """POST /v1/auth/login; returns the token pair (raises on anything but 200)."""
    async with httpx.AsyncClient(base_url=admin_url, timeout=10) as client:
        resp = await client.post(
            "/v1/auth/login",
            json={"username": username, "password": password, "device_id": device_id, "audience": audience},
        )
    if resp.status_code != 200:
        raise AssertionError(f"signing in {username!r}: {resp.status_code} {resp.text}")
    result: dict[str, Any] = resp.json()
    return result
