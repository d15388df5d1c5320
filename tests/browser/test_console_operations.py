"""The console's further journeys, each in a fresh browser context on one stack: signing in
(and being refused), a validation problem shown inline, the one-profile-per-user rule with its
"move" offer, a republish diff and version history, export then import, and retrying a sync
error from the ledger after a server-wins conflict."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from offsync_stack.testing import Stack
from tests.browser.console import (
    ROOT_BU,
    TEST_ADMIN_PASSWORD,
    admin_token,
    api,
    device_sync,
    field_role,
    held,
    make_users,
    nav,
    ok,
    run_async,
    shot,
    sign_in,
    until,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

NORA_PASSWORD = "nora-is-not-an-admin"


@pytest.fixture(scope="module")
def org(stack: Stack) -> None:
    with api(stack) as admin:
        for e in ("account", "contact"):
            ok(admin.patch(f"/v1/entities/{e}", json={"offline_enabled": True}))
        ok(admin.post("/v1/roles", json=field_role(("account", "contact"))))
        ok(admin.post("/v1/roles", json={"id": "clerk", "name": "Clerk", "privileges": {}}))
        make_users(admin, ("cat", "dan", "eve"))
        nora = {"id": "nora", "name": "Nora", "business_unit_id": ROOT_BU, "role_ids": ["clerk"]}
        ok(admin.post("/v1/users", json={**nora, "username": "nora", "password": NORA_PASSWORD}))


@pytest.fixture
def page(browser: Any, stack: Stack, org: None) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    page = ctx.new_page()
    sign_in(page, stack)
    yield page
    ctx.close()


def _profile(page: Any, name: str) -> str:
    nav(page, "Profiles")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name=re.compile(name)).wait_for()
    return str(page.url.split("?")[0])


def _add_accounts(page: Any, *, user: bool = True, team: bool = False) -> None:
    page.get_by_label("Add entity").select_option("account")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Other data filter").check()
    page.get_by_label("Download user records").set_checked(user)
    page.get_by_label("Download team records").set_checked(team)
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("account saved").wait_for()


def _add_person(page: Any, user_id: str) -> None:
    page.get_by_label("Add a person").fill(user_id)
    page.get_by_role("button", name="Add", exact=True).click()


def test_sign_in_refusals_and_csrf(browser: Any, stack: Stack, org: None) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{stack.admin_url}/console/profiles/")
    assert "/console/login" in page.url  # not signed in: sent to sign in, then back
    # An admin API token for the username works as the password too (operators signing in elsewhere).
    page.get_by_label("Username").fill("00000000-0000-0000-0000-000000000001")
    page.get_by_label("Password").fill(admin_token())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/profiles/")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    shot(page, "login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").get_by_text("Wrong username or password.").wait_for()

    # A signed-in user who is not an administrator gets a clear refusal, not the console.
    sign_in(page, stack, "nora", NORA_PASSWORD)
    page.get_by_role("heading", name="This console is for administrators").wait_for()
    page.get_by_text("You are signed in as nora, who holds no administrator role").wait_for()
    assert page.get_by_role("navigation", name="Console sections").count() == 0  # no console for a non-admin
    shot(page, "refused")

    # The session cookie is HttpOnly and SameSite=Strict, scoped to the console.
    cookie = next(c for c in ctx.cookies() if c["name"] == "offsync_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"

    # A sign-in posted from elsewhere (no sign-in form token) is refused too (login CSRF).
    forged = ctx.request.post(
        f"{stack.admin_url}/console/login", form={"username": "admin", "password": TEST_ADMIN_PASSWORD}
    )
    assert forged.status == 403 and "sign-in form expired" in forged.text()

    # A state-changing request without the CSRF token is refused, even with the admin's cookie.
    page.get_by_role("button", name="Sign out and sign in as someone else").click()
    page.wait_for_url("**/console/login")
    sign_in(page, stack)
    resp = ctx.request.post(f"{stack.admin_url}/console/entities/product", form={"offline_enabled": "true"})
    assert resp.status == 403 and "security token" in resp.text()
    with api(stack) as admin:
        assert ok(admin.get("/v1/entities/product"))["offline_enabled"] is False
    ctx.close()


def test_validation_problems_are_shown_inline(page: Any, stack: Stack) -> None:
    _profile(page, "Inline checks")
    page.get_by_label("Add entity").select_option("account")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Custom filter").check()
    group = page.locator("#builder > .fb-group")
    group.locator(":scope > .fb-head .fb-add-cond").click()
    cond = group.locator(".fb-cond").last
    cond.locator(".fb-attr").select_option("name")
    cond.locator(".fb-op").select_option("in")
    page.get_by_role("button", name="Save").click()
    # Refused by the API's own rule, shown where the filter is, announced to screen readers.
    error = page.locator("#form-error")
    error.wait_for()
    assert error.get_attribute("role") == "alert"
    assert "in" in error.inner_text()
    assert page.get_by_role("group", name="Download filter").locator("#form-error").count() == 1
    shot(page, "item-error")

    # Validate: a person who cannot read offline profiles is flagged beside their name.
    page.get_by_label("Other data filter").check()
    page.get_by_label("Download user records").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("account saved").wait_for()
    _add_person(page, "nora")
    page.get_by_role("status").get_by_text("Added 1 user(s)").wait_for()
    page.get_by_role("link", name="Validate").click()
    person = page.locator("#user-nora")
    person.get_by_role("note").get_by_text("no role with read access").wait_for()
    page.get_by_role("heading", name=re.compile("Records per user")).wait_for()


def test_one_profile_per_user_names_the_other_profile_and_moves(page: Any, stack: Stack) -> None:
    _profile(page, "North")
    _add_person(page, "cat")
    page.get_by_role("status").get_by_text("Added 1 user(s)").wait_for()
    south = _profile(page, "South")
    _add_person(page, "Cat (cat)")
    alert = page.get_by_role("alert").filter(has_text="North")
    alert.first.wait_for()
    shot(page, "profile-move")
    page.get_by_role("button", name="Move them to South").click()
    page.get_by_role("status").get_by_text("Added 1 user(s)").wait_for()
    assert page.locator("#user-cat").count() == 1
    with api(stack) as admin:
        assert ok(admin.get("/v1/users/cat"))["profile_id"] == south.rsplit("/", 1)[1]


def test_republish_shows_the_diff_and_versions(page: Any, stack: Stack) -> None:
    url = _profile(page, "Diffs")
    _add_accounts(page, user=True)
    _add_person(page, "dan")
    page.get_by_role("status").get_by_text("Added 1 user(s)").wait_for()
    page.get_by_role("link", name="Publish…").click()
    page.get_by_role("button", name="Confirm and publish").click()
    page.get_by_role("status").get_by_text("Published version 1").wait_for()
    assert page.get_by_text("Unpublished changes").count() == 0

    page.goto(f"{url}/items/account")
    page.get_by_label("Download team records").check()
    page.get_by_label(re.compile("Sync account every")).fill("30")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("account saved").wait_for()
    page.get_by_text("Unpublished changes").first.wait_for()

    page.get_by_role("link", name="Publish…").click()
    diff = page.get_by_role("region", name="What changes for devices")
    change = diff.locator("li.chg").filter(has_text="account")
    assert "Download team records" in change.inner_text()
    assert re.search(r"sync_interval_minutes: 5\s*→\s*30", change.inner_text())
    shot(page, "publish-diff")
    page.get_by_role("button", name="Confirm and publish").click()
    page.get_by_role("status").get_by_text("Published version 2").wait_for()

    page.get_by_role("link", name="Versions").click()
    page.get_by_label("Compare").select_option("1")
    page.get_by_label("with").select_option("2")
    page.get_by_role("button", name="Show differences").click()
    page.get_by_role("heading", name="v1 → v2").wait_for()
    assert "sync_interval_minutes" in page.locator(".diff").inner_text()
    shot(page, "versions")


def test_export_then_import(page: Any, stack: Stack, tmp_path: Path) -> None:
    _profile(page, "Travelling")
    _add_accounts(page)
    nav(page, "Solutions")
    page.get_by_label("Travelling").check()
    with page.expect_download() as got:
        page.get_by_role("button", name="Download solution file").click()
    path = tmp_path / "solution.json"
    got.value.save_as(path)
    doc = json.loads(path.read_text())
    assert [p["name"] for p in doc["profiles"]] == ["Travelling"]

    # All or nothing: a file with one bad profile imports nothing and lists the problem.
    bad = {**doc, "profiles": [{**doc["profiles"][0], "name": "Imported"}, {"name": "Broken", "items": "nope"}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    page.get_by_label("Solution file (.json)").set_input_files(tmp_path / "bad.json")
    page.get_by_role("button", name="Import").click()
    page.get_by_role("alert").get_by_text("nothing was imported").wait_for()
    assert "profiles[1]" in page.get_by_role("region", name=re.compile("problem")).inner_text()
    with api(stack) as admin:
        assert "Imported" not in [p["name"] for p in ok(admin.get("/v1/profiles"))]

    good = {**doc, "profiles": [{**doc["profiles"][0], "name": "Imported"}]}
    (tmp_path / "good.json").write_text(json.dumps(good))
    page.get_by_label("Solution file (.json)").set_input_files(tmp_path / "good.json")
    page.get_by_role("button", name="Import").click()
    result = page.get_by_role("region", name="Imported")
    result.get_by_role("link", name="Imported").wait_for()
    shot(page, "solutions")
    page.get_by_role("button", name="Publish all imported profiles").click()
    page.get_by_role("status").get_by_text(re.compile("Published .* v1")).wait_for()
    with api(stack) as admin:
        imported = next(p for p in ok(admin.get("/v1/profiles")) if p["name"] == "Imported")
    assert imported["published_version"] == 1


def test_retry_a_sync_error(page: Any, stack: Stack, tmp_path: Path) -> None:
    # Conflict detection on: the server wins, and the device's losing change is ledgered.
    nav(page, "Conflict detection")
    page.get_by_label("Yes — the server wins").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("Conflict detection saved").wait_for()
    shot(page, "settings")

    _profile(page, "Ledger")
    _add_accounts(page)
    _add_person(page, "eve")
    page.get_by_role("status").get_by_text("Added 1 user(s)").wait_for()
    page.get_by_role("link", name="Publish…").click()
    page.get_by_role("button", name="Confirm and publish").click()
    page.get_by_role("status").get_by_text("Published version 1").wait_for()

    headers = {"Authorization": f"Bearer {admin_token()}"}
    with httpx.Client(base_url=stack.records_url, headers=headers, timeout=15) as records:
        body = {"attributes": {"name": "Eve's shop"}, "owner_id": "eve", "business_unit_id": ROOT_BU}
        rid = ok(records.post("/v1/records/account", json=body))["id"]
        dev = device_sync(stack, "eve", "tablet", tmp_path, lambda d: rid in held(d, "account"), "eve's account")
        ok(records.patch(f"/v1/records/account/{rid}", json={"attributes": {"name": "Server's name"}}))
        dev.store.update("account", rid, {"name": "Device's name"})
        run_async(dev.sync(timeout=20))

        nav(page, "Sync errors")
        row = page.locator("#sync-errors tbody tr").filter(has_text=rid)

        def ledgered() -> bool:
            page.reload()
            return row.count() == 1

        until(ledgered, message="the losing change in the ledger")
        assert "server_wins" in row.inner_text()
        shot(page, "sync-errors")
        row.get_by_label("over the server's version").check()
        row.get_by_role("button", name=re.compile("Retry change")).click()
        page.get_by_role("status").get_by_text(re.compile("re-applied")).wait_for()
        assert ok(records.get(f"/v1/records/account/{rid}"))["attributes"]["name"] == "Device's name"
    assert "reapplied" in page.locator("#sync-errors tbody tr").filter(has_text=rid).inner_text()

    nav(page, "Conflicts")
    page.get_by_role("region", name=re.compile("Conflict")).first.wait_for()
    assert "Server's name" in page.locator("section.conflict").first.inner_text()
    shot(page, "conflicts")
    nav(page, "Devices")
    shot(page, "devices")
    nav(page, "Live figures")
    rate = page.locator("[data-rate='offsync_sync_ops_delivered_total']")
    until(lambda: re.fullmatch(r"\d+\.\d", rate.inner_text()), message="a rate after the second refresh")
    shot(page, "live")


def test_disabling_an_entity_in_use_explains_why(page: Any, stack: Stack) -> None:
    _profile(page, "Keeps contacts")
    page.get_by_label("Add entity").select_option("contact")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("All records").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("contact saved").wait_for()
    nav(page, "Entities")
    page.get_by_role("switch", name="Enable Contact for mobile offline").click()
    page.get_by_role("alert").get_by_text(re.compile("used by mobile offline profiles .*Keeps contacts")).wait_for()
    assert page.get_by_role("switch", name="Enable Contact for mobile offline").get_attribute("aria-checked") == "true"


def test_keyboard_only(browser: Any, stack: Stack, org: None) -> None:
    """Sign in, reach a switch and flip it with the keyboard alone; the outcome is announced."""
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{stack.admin_url}/console/entities")
    # The username field takes focus itself (autofocus); typing before it has would be lost.
    until(
        lambda: page.evaluate("document.activeElement && document.activeElement.id") == "username",
        message="the username field has focus",
    )
    page.keyboard.type("admin")
    page.keyboard.press("Tab")
    page.keyboard.type(TEST_ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Entities").wait_for()
    target = page.get_by_role("switch", name="Enable Opportunity for mobile offline")

    for _ in range(60):  # Tab through the page in order until the switch has focus
        page.keyboard.press("Tab")
        if target.evaluate("e => e === document.activeElement"):
            break
    else:
        raise AssertionError("the switch cannot be reached with Tab")
    page.keyboard.press("Space")
    page.get_by_role("status").get_by_text("opportunity enabled for mobile offline").wait_for()
    ctx.close()
