"""The seed's Steps 1-3 done in the admin console by a browser, then checked on real devices:
enable account, contact and task; create a profile with a user-owned account filter, related
contacts and a 3-level custom task filter; add two users; publish; enable the app module; then
each user's device (the Python SDK) receives exactly the expected records. Continues with the
device list and a republish diff on the same stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from offsync_stack.testing import Stack
from tests.browser.console import ROOT_BU, api, device_sync, field_role, held, make_users, nav, ok, shot, sign_in, until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

USERS = ("ana", "ben")


@pytest.fixture(scope="module")
def org(stack: Stack) -> dict[str, Any]:
    """Users and records (the console does not manage users or records): per user an own account
    with a contact and five tasks, plus records nobody's filter should bring."""
    ids: dict[str, Any] = {}
    with api(stack) as admin, api(stack, "conflict-service") as records:
        ok(admin.post("/v1/roles", json=field_role(("account", "contact", "task"))))
        make_users(admin, (*USERS, "olga"))  # olga owns records nobody's profile should bring

        def rec(entity: str, owner: str, **attrs: Any) -> str:
            body = {"attributes": attrs, "owner_id": owner, "business_unit_id": ROOT_BU}
            return str(ok(records.post(f"/v1/records/{entity}", json=body))["id"])

        other_account = rec("account", "olga", name="Not theirs")
        rec("contact", "olga", lastname="Orphan", parentcustomerid=other_account)
        for u in USERS:
            acct = rec("account", u, name=f"{u} account")
            contact = rec("contact", "olga", lastname=f"{u} contact", parentcustomerid=acct)
            wanted = [
                rec("task", u, subject="Urgent", prioritycode=1, statecode=1),  # priority 1
                rec("task", u, subject="Visit plant", prioritycode=2, statecode=0),  # Visit* and open
            ]
            rec("task", u, subject="Visit closed", prioritycode=2, statecode=1)  # closed: no
            rec("task", u, subject="Call", prioritycode=2, statecode=0)  # not a visit: no
            rec("task", "olga", subject="Visit other", prioritycode=1, statecode=0)  # not theirs
            ids[u] = {"account": {acct}, "contact": {contact}, "task": set(wanted)}
    return ids


def _add_condition(group: Any, attribute: str, operator: str, value: str | None = None) -> None:
    """Adds a condition at the end of ``group`` (a builder group locator) and fills it in."""
    group.locator(":scope > .fb-head .fb-add-cond").click()
    cond = group.locator(":scope > .fb-body > .fb-cond").last
    cond.locator(".fb-attr").select_option(attribute)
    cond.locator(".fb-op").select_option(operator)
    if value is not None:
        editor = cond.locator(".fb-val")
        if editor.evaluate("e => e.tagName") == "SELECT":
            editor.select_option(value)
        else:
            editor.fill(value)


def test_seed_steps_in_the_console_then_on_devices(
    stack: Stack, org: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, stack)
    shot(page, "home")

    # Step 1: enable entities for mobile offline.
    nav(page, "Entities")
    for name in ("Account", "Contact", "Task"):
        page.get_by_role("switch", name=f"Enable {name} for mobile offline").click()
        page.get_by_role("status").get_by_text(f"{name.lower()} enabled for mobile offline").wait_for()
    assert page.get_by_role("switch", name="Enable Task for mobile offline").get_attribute("aria-checked") == "true"
    shot(page, "entities")

    # Step 2: create a profile.
    nav(page, "Profiles")
    page.get_by_label("Name").fill("Field sales")
    page.get_by_label("Description").fill("What reps carry on the road")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name=re.compile("Field sales")).wait_for()
    profile_url = page.url.split("?")[0]

    # Accounts: the user's own records ("Other data filter" > "Download user records").
    page.get_by_label("Add entity").select_option("account")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Custom filter").wait_for()  # user-or-team ownership offers all four
    page.get_by_label("Other data filter").check()
    page.get_by_label("Download user records").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("account saved").wait_for()

    # Contacts: related records only, through the contact's parent account.
    page.get_by_label("Add entity").select_option("contact")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Download related records only").check()
    page.get_by_label(re.compile("Account \\| Field name: parentcustomerid")).check()
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("contact saved").wait_for()

    # Tasks: a 3-level custom filter:
    #   ownerid eq-userid AND (prioritycode = 1 OR (subject begins-with "Visit" AND statecode = 0))
    page.get_by_label("Add entity").select_option("task")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Custom filter").check()
    level1 = page.locator("#builder > .fb-group")
    level1.locator(":scope > .fb-head .fb-match").select_option("and")
    _add_condition(level1, "ownerid", "eq-userid")
    level1.locator(":scope > .fb-head .fb-add-group").click()
    level2 = level1.locator(":scope > .fb-body > .fb-group")
    level2.locator(":scope > .fb-head .fb-match").select_option("or")
    _add_condition(level2, "prioritycode", "eq", "1")
    level2.locator(":scope > .fb-head .fb-add-group").click()
    level3 = level2.locator(":scope > .fb-body > .fb-group")
    level3.locator(":scope > .fb-head .fb-match").select_option("and")
    assert level3.locator(".fb-add-group").count() == 0  # three levels is the limit
    _add_condition(level3, "subject", "begins-with", "Visit")
    _add_condition(level3, "statecode", "eq", "0")
    shot(page, "item-custom-filter")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("status").get_by_text("task saved").wait_for()

    # Step 2.1: add two people, one at a time, with the search box.
    for u in USERS:
        page.get_by_label("Add a person").fill(f"{u.title()} ({u})")
        page.get_by_role("button", name="Add", exact=True).click()
        page.get_by_role("status").get_by_text("Added 1 user(s)").wait_for()
    assert page.get_by_text("Unpublished changes").first.is_visible()
    page.get_by_role("link", name="Validate").click()
    page.get_by_role("heading", name=re.compile("Records per user")).wait_for()
    shot(page, "profile")

    # Step 2.2: publish, after seeing what it changes.
    page.get_by_role("link", name="Publish…").click()
    diff = page.get_by_role("region", name="What changes for devices")
    for line in ("Entity account added", "Entity task added", "Person ana added", "Person ben added"):
        diff.get_by_text(line).wait_for()
    shot(page, "publish")
    page.get_by_role("button", name="Confirm and publish").click()
    page.get_by_role("status").get_by_text("Published version 1").wait_for()
    nav(page, "Profiles")
    shot(page, "profiles")

    # Step 3: enable the app module for offline and attach the profile.
    nav(page, "App modules")
    page.get_by_label("Name").fill("Field Service")
    page.get_by_role("button", name="Create").click()
    page.get_by_label("Attach profile").select_option(label="Field sales")
    page.get_by_role("button", name="Attach").click()
    page.get_by_role("button", name="Detach Field sales").wait_for()
    shot(page, "app-modules")

    # What the console stored is what the API serves.
    with api(stack) as admin:
        item = {i["entity"]: i for i in ok(admin.get(profile_url.replace("/console/", "/v1/")))["items"]}
    assert item["account"]["filter"] == {"kind": "other", "user": True, "team": False, "business_unit": False}
    assert item["contact"]["relationships"] == [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}]
    assert item["task"]["filter"]["condition"] == {
        "and": [
            {"attribute": "ownerid", "operator": "eq-userid"},
            {
                "or": [
                    {"attribute": "prioritycode", "operator": "eq", "value": 1},
                    {
                        "and": [
                            {"attribute": "subject", "operator": "begins-with", "value": "Visit"},
                            {"attribute": "statecode", "operator": "eq", "value": 0},
                        ]
                    },
                ]
            },
        ]
    }

    # Each user's device receives exactly that user's records.
    for u in USERS:
        want = org[u]
        dev = device_sync(
            stack,
            u,
            "phone",
            tmp_path,
            lambda d, want=want: all(held(d, e) == want[e] for e in want),
            f"{u}'s records on the phone",
        )
        for entity, ids in want.items():
            assert held(dev, entity) == ids, entity

    # The device list shows the device that synced a moment ago.
    nav(page, "Devices")
    row = page.locator("tr[data-user='ana'][data-device='phone']")

    def synced_shown() -> bool:  # the registry is written once a second
        page.reload()
        return bool(row.count()) and "ago" in row.locator(".synced").inner_text()

    until(synced_shown, message="ana's phone in the device list")
    assert re.search(r"\d+ s ago", row.locator(".synced").inner_text())
    assert "offsync-device-python" in row.inner_text()
    assert "v1" in row.inner_text()
    ctx.close()
