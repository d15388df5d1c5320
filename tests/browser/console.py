"""Helpers for the console's browser tests: an admin API client for setup, signing in through
the console's own sign-in page, and a device of a user that syncs with the Python SDK."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from offsync_device.client import Device, SyncRefused
from offsync_device.local_store import LocalStore
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack import testing
from offsync_stack.testing import TEST_ADMIN_PASSWORD, Stack, eventually

ROOT_BU = "00000000-0000-0000-0000-000000000100"
CONSOLE_TIMEOUT_MS = 15_000


def admin_token(user_id: str = BOOTSTRAP_ADMIN_USER_ID) -> str:
    return issue_token(DEV_JWT_SECRET, user_id, ADMIN_AUDIENCE)


def api(stack: Stack, service: str = "profile-service") -> httpx.Client:
    return httpx.Client(base_url=stack.url(service), headers={"Authorization": f"Bearer {admin_token()}"}, timeout=15)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


def sign_in(
    page: Any, stack: Stack, username: str = "admin", password: str = TEST_ADMIN_PASSWORD, landing: str = "/console/"
) -> None:
    """Signs in through the console's login page (the test stack's bootstrap admin by default)."""
    page.set_default_timeout(CONSOLE_TIMEOUT_MS)
    page.goto(f"{stack.admin_url}{landing}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{landing}")


def field_role(entities: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": "field",
        "name": "Field worker",
        "read_offline_profile": True,
        "privileges": {
            e: {"create": "user", "read": "organization", "write": "user", "delete": "user"} for e in entities
        },
    }


def make_users(client: httpx.Client, ids: tuple[str, ...], role: str = "field") -> None:
    for uid in ids:
        ok(
            client.post(
                "/v1/users", json={"id": uid, "name": uid.title(), "business_unit_id": ROOT_BU, "role_ids": [role]}
            )
        )


def device_sync(stack: Stack, user: str, device_id: str, tmp: Path, until: Any, message: str) -> Device:
    """A device of ``user`` syncs until ``until(device)`` holds (the publish may still be travelling)."""
    with api(stack) as client:
        token = ok(client.post("/v1/tokens", json={"user_id": user, "audience": "device", "device_id": device_id}))[
            "token"
        ]
    dev = Device(stack.sync_ws, LocalStore(tmp / f"{user}-{device_id}.sqlite"), token, device_id=device_id)

    async def attempt() -> bool:
        try:
            await dev.sync(timeout=20)
        except SyncRefused:
            return False
        return bool(until(dev))

    async def run() -> None:
        # On a timeout the caller's own assertions show what the device holds instead.
        with contextlib.suppress(AssertionError):
            await eventually(attempt, timeout=40, interval=0.3, message=message)

    run_async(run())
    return dev


def run_async(coro: Any) -> Any:
    """Runs a coroutine on its own loop in its own thread: the test's thread runs Playwright's sync API."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def shot(page: Any, name: str) -> None:
    """Saves a screenshot of the page for docs/console.md when OFFSYNC_CONSOLE_SCREENSHOTS names
    a folder (make console-screenshots); a no-op otherwise."""
    folder = os.environ.get("OFFSYNC_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def held(dev: Device, entity: str) -> set[str]:
    return {rid for rid, _ in dev.store.list(entity)}


# Polls ``check()`` (which may reload a page) until it is truthy, less often than the default.
until = functools.partial(testing.until, timeout=20.0, interval=0.3)


def nav(page: Any, section: str) -> None:
    """Opens a console section from the side navigation."""
    page.get_by_role("navigation", name="Console sections").get_by_role("link", name=section, exact=True).click()
