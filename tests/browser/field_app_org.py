"""The organization the field app's browser tests sign in to, and how they drive the app.

Two business units: ana and ben work in the root one, cid in a child one. The field profile
carries the accounts of the user's business unit, so ana and ben share a set and cid's accounts
are never on their devices. Everyone signs in with a password (docs/identity.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.accounts import ROOT_BUSINESS_UNIT_ID
from offsync_stack.infra import Infra
from offsync_stack.testing import Stack, make_env, profiles_materialized, records_in_buckets, start_stack

PASSWORD = "field-app-pass-0123"
CHILD_BU = "field-app-child-bu"


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


@dataclass
class FieldOrg:
    stack: Stack
    prefix: str  # user ids, so each test module's stack can hold several orgs
    shared: list[str]  # accounts of the root business unit (ana's and ben's set)
    other: list[str]  # accounts of the child business unit (cid's)

    def user(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def app_url(self) -> str:
        return self.stack.url("sync-service") + "/app/"

    def records(self) -> httpx.Client:
        return httpx.Client(base_url=self.stack.records_url, headers=admin_headers(), timeout=10)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.stack.admin_url, headers=admin_headers(), timeout=10)

    def server_record(self, rid: str) -> dict[str, Any] | None:
        with self.records() as api:
            r = api.get(f"/v1/records/account/{rid}")
        if r.status_code == 404:
            return None
        body: dict[str, Any] = ok(r)
        return None if body.get("deleted") else body

    def set_conflict_detection(self, on: bool) -> None:
        with self.admin() as admin:
            ok(admin.patch("/v1/org-settings", json={"conflict_detection": on}))


def make_org(stack: Stack, prefix: str, accounts: int = 6) -> FieldOrg:
    """The org above, its users prefixed (several tests share one stack), published."""
    with (
        httpx.Client(base_url=stack.admin_url, headers=admin_headers(), timeout=20) as admin,
        httpx.Client(base_url=stack.records_url, headers=admin_headers(), timeout=20) as records,
    ):
        ok(admin.patch("/v1/entities/account", json={"offline_enabled": True}))
        if admin.get(f"/v1/business-units/{CHILD_BU}").status_code == 404:
            bu = {"id": CHILD_BU, "name": "Field app child BU", "parent_id": ROOT_BUSINESS_UNIT_ID}
            ok(admin.post("/v1/business-units", json=bu))
        role = f"{prefix}field"
        depth = "business_unit"
        privileges = {"account": {"create": depth, "read": depth, "write": depth, "delete": depth}}
        ok(
            admin.post(
                "/v1/roles",
                json={
                    "id": role,
                    "name": f"Field worker {prefix}",
                    "read_offline_profile": True,
                    "privileges": privileges,
                },
            )
        )
        for name, bu_id in (("ana", ROOT_BUSINESS_UNIT_ID), ("ben", ROOT_BUSINESS_UNIT_ID), ("cid", CHILD_BU)):
            user = {
                "id": f"{prefix}{name}",
                "name": name.title(),
                "username": f"{prefix}{name}",
                "password": PASSWORD,
                "business_unit_id": bu_id,
                "role_ids": [role],
            }
            ok(admin.post("/v1/users", json=user))
        profile = f"{prefix}profile"
        ok(admin.post("/v1/profiles", json={"id": profile, "name": f"Field app {prefix}"}))
        item = {"entity": "account", "filter": {"kind": "business_unit"}}
        ok(admin.post(f"/v1/profiles/{profile}/items", json=item))
        members = {"user_ids": [f"{prefix}{n}" for n in ("ana", "ben", "cid")]}
        ok(admin.post(f"/v1/profiles/{profile}/users", json=members))
        ok(admin.post(f"/v1/profiles/{profile}/publish"))

        def account(name: str, owner: str, bu_id: str) -> str:
            body = {"attributes": {"name": name}, "owner_id": owner, "business_unit_id": bu_id}
            return str(ok(records.post("/v1/records/account", json=body))["id"])

        shared = [account(f"{prefix}Shared {i}", f"{prefix}ana", ROOT_BUSINESS_UNIT_ID) for i in range(accounts)]
        other = [account(f"{prefix}Other {i}", f"{prefix}cid", CHILD_BU) for i in range(2)]
    # Publishing is asynchronous: until it lands, the app's first sync is refused (no_profile);
    # the records, written after it, reach the buckets a moment later still.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, profiles_materialized(stack, *members["user_ids"])).result()
        pool.submit(asyncio.run, records_in_buckets(stack, [*shared, *other])).result()
    return FieldOrg(stack, prefix, shared, other)


@contextlib.contextmanager
def running_stack(infra: Infra, label: str, logs: Path) -> Iterator[Stack]:
    """The four services on a fresh database, started without an event loop: Playwright's sync
    API holds the main thread's loop while the browser lives, so the async ``stack`` fixture
    cannot run beside it."""
    with ThreadPoolExecutor(1) as pool:
        env = pool.submit(asyncio.run, make_env(infra, label)).result()
    s = start_stack(env, logs)
    try:
        yield s
    finally:
        s.group.stop_all()
        infra.release_topics(env.topic_prefix)


# ---------------------------------------------------------------- driving the app -------
def sign_in(page: Any, org: FieldOrg, name: str) -> None:
    """Open the app, sign in as this user and wait for the first download to be stored."""
    page.goto(org.app_url)
    page.wait_for_selector("body[data-ready='true']")
    page.fill("#username", org.user(name))
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#workspace:not([hidden])")
    wait_synced(page)


def wait_synced(page: Any, timeout_ms: float = 30_000) -> None:
    """Caught up with the server and nothing pending: the SDK's own notion (window.offsync) and
    what the status bar shows."""
    page.wait_for_function(
        "() => window.offsync && window.offsync.status.caughtUp && window.offsync.status.pending === 0"
        " && document.querySelector('#status-pending').dataset.count === '0'",
        timeout=timeout_ms,
    )


def wait_service_worker(page: Any) -> None:
    """The service worker controls the page, so the shell is cached and a reload works offline."""
    page.wait_for_function("() => navigator.serviceWorker.controller !== null", timeout=20_000)


def listed(page: Any) -> dict[str, str]:
    """The records the list shows: id -> the text of its row."""
    rows = page.eval_on_selector_all("#records li.record", "els => els.map(e => [e.dataset.id, e.textContent])")
    return {rid: text for rid, text in rows}


def local_ids(page: Any, entity: str = "account") -> set[str]:
    """Every record id the device holds for the entity (not only those listed)."""
    return set(page.evaluate("(e) => window.offsync.query(e).map(r => r.id)", entity))


def wait_listed(page: Any, rid: str, text: str, timeout_ms: float = 10_000) -> float:
    """Wait until the list shows the record with this text; returns when (time.monotonic())."""
    page.wait_for_function(
        "([id, text]) => { const li = document.querySelector(`#records li.record[data-id='${id}']`);"
        " return !!li && li.textContent.includes(text); }",
        arg=[rid, text],
        timeout=timeout_ms,
        polling="raf",
    )
    return time.monotonic()


def edit_name(page: Any, rid: str, name: str) -> float:
    """Returns when the change was saved (time.monotonic() at the click on Save)."""
    page.click(f"#records li.record[data-id='{rid}']")
    page.fill("#fields input[name='name']", name)
    saved = time.monotonic()
    page.click("#save")
    page.wait_for_selector("#editor", state="hidden")
    return saved


def create_account(page: Any, name: str) -> float:
    """Returns when the change was saved (time.monotonic() at the click on Save)."""
    page.click("#new-record")
    page.fill("#fields input[name='name']", name)
    saved = time.monotonic()
    page.click("#save")
    page.wait_for_selector("#editor", state="hidden")
    return saved


def delete_record(page: Any, rid: str) -> None:
    page.click(f"#records li.record[data-id='{rid}']")
    page.click("#delete")
    page.wait_for_selector("#editor", state="hidden")


def pending(page: Any) -> int:
    return int(page.get_attribute("#status-pending", "data-count") or 0)
