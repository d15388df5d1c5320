"""A field worker's device over real sockets: the SDK and the `offsync-device` CLI sign in with a
username and password, renew the access token silently (before expiry, and after a 4001
close), and meet every failure as one sentence; the CLI's everyday commands behave.

Access tokens in this module live 6 s, so renewal happens while the tests watch."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from offsync_device.client import Device
from offsync_device.local_store import LocalStore
from offsync_device.signin import Credentials, SignInError, SignInRequired
from offsync_shared import protocol as p
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.accounts import create_user
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra
from offsync_stack.testing import Stack, eventually, make_env, profiles_materialized, release_env, start_stack

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}
PASSWORD = "field-worker-password"
ACCESS_TTL_S = 6


@dataclass
class Org:
    stack: Stack

    @property
    def api(self) -> str:
        return self.stack.admin_url


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


@pytest_asyncio.fixture(scope="module")
async def org(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Org]:
    env = await make_env(infra, "signin")
    log_dir = tmp_path_factory.mktemp("signin-logs")
    stack = await asyncio.to_thread(start_stack, env, log_dir, None, {"OFFSYNC_ACCESS_TOKEN_TTL_S": str(ACCESS_TTL_S)})
    try:
        async with (
            httpx.AsyncClient(base_url=stack.admin_url, headers=ADMIN, timeout=10) as admin,
            httpx.AsyncClient(base_url=stack.records_url, headers=ADMIN, timeout=10) as records,
        ):
            _ok(await admin.patch("/v1/entities/account", json={"offline_enabled": True}))
            privileges = {"account": {"create": "user", "read": "user", "write": "user", "delete": "none"}}
            role = {"id": "field", "name": "Field", "read_offline_profile": True, "privileges": privileges}
            _ok(await admin.post("/v1/roles", json=role))
            for user in ("ada", "ben", "cli", "eve"):
                await create_user(admin, user, password=PASSWORD, role_ids=["field"])
            _ok(await admin.post("/v1/profiles", json={"id": "p", "name": "Field"}))
            item = {"entity": "account", "filter": {"kind": "other", "user": True}}
            _ok(await admin.post("/v1/profiles/p/items", json=item))
            _ok(await admin.post("/v1/profiles/p/users", json={"user_ids": ["ada", "ben", "cli", "eve"]}))
            _ok(await admin.post("/v1/profiles/p/publish"))
            for user in ("ada", "ben", "cli", "eve"):
                account = {"id": f"{user}-1", "attributes": {"name": f"{user} first"}, "owner_id": user}
                _ok(await records.post("/v1/records/account", json=account))
        await profiles_materialized(stack, "ada", "ben", "cli", "eve")
        yield Org(stack)
    finally:
        await asyncio.to_thread(stack.group.stop_all)
        await release_env(infra, env)


async def _create_account(org: Org, user: str, rid: str, name: str) -> None:
    async with httpx.AsyncClient(base_url=org.stack.records_url, headers=ADMIN, timeout=10) as records:
        body = {"id": rid, "attributes": {"name": name}, "owner_id": user}
        _ok(await records.post("/v1/records/account", json=body))


async def _signed_in(org: Org, user: str, tmp: Path, **kw: Any) -> tuple[LocalStore, Credentials]:
    store = LocalStore(tmp / f"{user}.sqlite")
    creds = Credentials(store, **kw)
    await creds.login(org.api, user, PASSWORD)
    return store, creds


async def _until_has(store: LocalStore, rid: str) -> bool:
    async def check() -> bool:
        return store.get("account", rid) is not None

    return bool(await eventually(check, timeout=40, interval=0.1, message=f"{rid} on the device"))


# ----------------------------------------------------------------------------- SDK ----


async def test_sdk_signs_in_discovers_the_websocket_and_syncs(org: Org, tmp_path: Path) -> None:
    store, creds = await _signed_in(org, "ada", tmp_path)
    assert store.meta("url") == org.stack.sync_ws
    assert store.meta("refresh_token")  # kept in the device store

    async def synced() -> bool:
        report = await Device(store.meta("url") or "", store, creds).sync()
        return store.get("account", "ada-1") is not None and report.cursor > 0

    await eventually(synced, timeout=40, interval=0.3, message="ada's first sync")


async def test_a_live_session_outlives_its_access_tokens(org: Org, tmp_path: Path) -> None:
    """Renewal before expiry: an auth frame on the open connection, never a reconnect."""
    store, creds = await _signed_in(org, "ben", tmp_path, margin_s=2.0)
    device = Device(store.meta("url") or "", store, creds)
    stop = asyncio.Event()
    task = asyncio.create_task(device.run(stop))
    try:
        await _until_has(store, "ben-1")
        started = time.time()

        async def two_lifetimes_passed() -> bool:
            return time.time() - started > 2 * ACCESS_TTL_S + 1

        await eventually(two_lifetimes_passed, timeout=3 * ACCESS_TTL_S, interval=0.2)
        await _create_account(org, "ben", "ben-2", "after two token lifetimes")
        await _until_has(store, "ben-2")
        assert device.report.connections == 1, device.report
    finally:
        stop.set()
        await task


async def test_a_4001_close_renews_and_resumes_without_the_user(org: Org, tmp_path: Path) -> None:
    """No early renewal (negative margin): the server closes 4001 at expiry; the device renews
    with its refresh token and carries on."""
    store, creds = await _signed_in(org, "cli", tmp_path, margin_s=-30.0)
    device = Device(store.meta("url") or "", store, creds)
    stop = asyncio.Event()
    task = asyncio.create_task(device.run(stop))
    try:
        await _until_has(store, "cli-1")

        async def reconnected() -> bool:
            return device.report.connections >= 2

        await eventually(reconnected, timeout=4 * ACCESS_TTL_S, interval=0.2, message="a reconnect after 4001")
        await _create_account(org, "cli", "cli-2", "after the 4001")
        await _until_has(store, "cli-2")
    finally:
        stop.set()
        await task


async def test_a_revoked_sign_in_asks_to_sign_in_again(org: Org, tmp_path: Path) -> None:
    store, creds = await _signed_in(org, "eve", tmp_path)
    async with httpx.AsyncClient(base_url=org.api, headers=ADMIN, timeout=10) as admin:
        _ok(await admin.post(f"/v1/users/eve/devices/{store.device_id()}/revoke"))
    creds.expire()
    with pytest.raises(SignInRequired, match="sign in again"):
        await Device(store.meta("url") or "", store, creds).sync(max_attempts=1)


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        ("http://no-such-host.invalid:8100", "cannot find the server"),
        ("ws://127.0.0.1:8100/v1/sync", "websocket URL"),
        ("ftp://example.org", "not an http:// or https:// address"),
    ],
    ids=["unknown-host", "websocket-url", "other-scheme"],
)
async def test_sign_in_failures_are_one_sentence(tmp_path: Path, url: str, sentence: str) -> None:
    with pytest.raises(SignInError, match=sentence) as err:
        await Credentials(LocalStore(tmp_path / "x.sqlite")).login(url, "ada", PASSWORD)
    assert "\n" not in str(err.value)


async def test_wrong_password_non_offsync_server_and_server_down(org: Org, tmp_path: Path) -> None:
    creds = Credentials(LocalStore(tmp_path / "x.sqlite"))
    with pytest.raises(SignInError, match="^wrong username or password$"):
        await creds.login(org.api, "ada", "not the password")
    with pytest.raises(SignInError, match="is not an Offsync server"):
        await creds.login(org.stack.records_url, "ada", PASSWORD)  # another service answers there
    with pytest.raises(SignInError, match="nothing answers at"):
        await creds.login(f"http://127.0.0.1:{free_port()}", "ada", PASSWORD)


# ----------------------------------------------------------------------------- CLI ----


def _cli(store: Path, *args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offsync_device.cli", "--store", str(store), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_sentence(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


async def test_cli_signs_in_syncs_types_fields_and_shows_rejections(org: Org, tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite"
    login = await asyncio.to_thread(
        _cli, db, "login", "--url", org.api + "/docs", "--username", "ada", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert login.returncode == 0 and "signed in as ada" in login.stdout, login

    async def synced() -> bool:
        proc = await asyncio.to_thread(_cli, db, "sync")
        return proc.returncode == 0 and "ada-1" in (await asyncio.to_thread(_cli, db, "list", "account")).stdout

    await eventually(synced, timeout=60, interval=0.5, message="the CLI's first sync")
    # name=value typed by the entity's metadata: a phone number stays a string, a count an integer.
    created = await asyncio.to_thread(
        _cli, db, "create", "account", "name=Contoso", "telephone1=0123", "numberofemployees=12", "creditonhold=no"
    )
    assert created.returncode == 0, created
    rid = created.stdout.strip()
    shown = await asyncio.to_thread(_cli, db, "show", "account", rid)
    assert '"telephone1": "0123"' in shown.stdout and '"numberofemployees": 12' in shown.stdout, shown.stdout
    assert '"creditonhold": false' in shown.stdout
    bad = await asyncio.to_thread(_cli, db, "create", "account", "name=X", "numberofemployees=twelve")
    assert "numberofemployees takes a whole number" in _one_sentence(bad)
    # A change the server refuses (this role may not delete) comes back with the server's reason.
    await asyncio.to_thread(_cli, db, "delete", "account", "ada-1")
    sync = await asyncio.to_thread(_cli, db, "sync")
    assert sync.returncode == 0, sync
    assert "rejected: account ada-1:" in sync.stdout and "delete" in sync.stdout.split("ada-1:")[1], sync.stdout
    conflicts = await asyncio.to_thread(_cli, db, "conflicts")
    assert "rejected account ada-1" in conflicts.stdout, conflicts.stdout
    cleared = await asyncio.to_thread(_cli, db, "conflicts", "--clear")
    assert cleared.returncode == 0 and "cleared 1 entry" in cleared.stdout
    assert (await asyncio.to_thread(_cli, db, "conflicts")).stdout == ""


async def test_cli_failures_are_one_plain_sentence(org: Org, tmp_path: Path) -> None:
    db = tmp_path / "f.sqlite"
    wrong = await asyncio.to_thread(_cli, db, "login", "--url", org.api, "--username", "ada", "--password", "nope!")
    assert _one_sentence(wrong) == "error: wrong username or password"
    not_offsync = await asyncio.to_thread(
        _cli, db, "login", "--url", org.stack.records_url, "--username", "ada", "--password", PASSWORD
    )
    assert "is not an Offsync server" in _one_sentence(not_offsync)
    down = await asyncio.to_thread(
        _cli, db, "login", "--url", f"http://127.0.0.1:{free_port()}", "--username", "ada", "--password", PASSWORD
    )
    assert "nothing answers at" in _one_sentence(down)
    http_url = await asyncio.to_thread(_cli, db, "login", "--url", org.api, "--token", "x.y.z")
    assert "is a web address; the device connects to the websocket" in _one_sentence(http_url)
    token = issue_token(DEV_JWT_SECRET, "ada", "offsync-device", device_id="phone")
    ws = org.stack.sync_ws
    for url, sentence in [
        (ws.replace("/v1/sync", "/v1/wrong"), "no Offsync device endpoint at /v1/wrong"),
        (org.api.replace("http://", "ws://") + "/v1/sync", "no Offsync device endpoint"),  # another service's port
        (f"ws://127.0.0.1:{free_port()}/v1/sync", "nothing answers at"),
    ]:
        assert (await asyncio.to_thread(_cli, db, "login", "--url", url, "--token", token)).returncode == 0
        proc = await asyncio.to_thread(_cli, db, "sync")
        line = _one_sentence(proc)
        assert sentence in line and "HTTP 403" not in line and "InvalidURI" not in line, line


async def test_cli_sync_watch_stays_connected_live(org: Org, tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    login = await asyncio.to_thread(_cli, db, "login", "--url", org.api, "--username", "ben", "--password", PASSWORD)
    assert login.returncode == 0, login
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "offsync_device.cli",
        "--store",
        str(db),
        "sync",
        "--watch",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        seen: list[str] = []

        async def line_with(needle: str) -> None:
            while not any(needle in line for line in seen):
                raw = await proc.stdout.readline()  # type: ignore[union-attr]
                assert raw, f"watch ended early; saw {seen}"
                seen.append(raw.decode())

        await asyncio.wait_for(line_with("ben-1"), 60)
        await _create_account(org, "ben", "ben-live", "while watching")
        await asyncio.wait_for(line_with("ben-live"), 60)
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert code == 0 and "Traceback" not in stderr, stderr


async def test_tokens_of_a_deleted_user_do_not_pass_for_its_successor(org: Org) -> None:
    """Same id, another person: the records API and the device websocket refuse the old tokens."""
    system_admin = "00000000-0000-0000-0000-000000000200"
    async with httpx.AsyncClient(base_url=org.api, headers=ADMIN, timeout=10) as admin:
        await create_user(admin, "zed", password=PASSWORD, role_ids=["field", system_admin])
        old_admin = (await _login_json(org, "zed", audience="admin", device_id=None))["access_token"]
        old_device = (await _login_json(org, "zed", device_id="zed-phone"))["access_token"]
        async with httpx.AsyncClient(base_url=org.stack.records_url, timeout=10) as records:
            bearer = {"Authorization": f"Bearer {old_admin}"}
            assert (await records.get("/v1/records/account", headers=bearer)).status_code == 200
            _ok(await admin.delete("/v1/users/zed"))
            await create_user(admin, "zed", password=PASSWORD, role_ids=["field", system_admin])
            assert (await records.get("/v1/records/account", headers=bearer)).status_code == 401
    async with connect(org.stack.sync_ws, additional_headers={"Authorization": f"Bearer {old_device}"}) as ws:
        await ws.send(p.encode(p.Hello(device_id="zed-phone")).decode())
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await ws.recv()
    assert ws.close_code == p.CLOSE_UNAUTHENTICATED, (ws.close_code, ws.close_reason)


async def _login_json(org: Org, user: str, **kw: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=org.api, timeout=10) as c:
        body = {"username": user, "password": PASSWORD, **kw}
        return dict(_ok(await c.post("/v1/auth/login", json=body)))
