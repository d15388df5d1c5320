"""The field app offline, as a person uses it: sign in and download; go offline and reload (the
service worker serves the shell, IndexedDB the records); edit 3 records, create 1, delete 1;
close the tab and reopen it offline (the pending changes are still there); go online, and the
server has exactly those changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from offsync_stack.infra import Infra
from offsync_stack.testing import Stack, until
from tests.browser import field_app_org as app

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def field_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app.running_stack(infra, "fieldoff", tmp_path_factory.mktemp("fieldoff-logs")) as s:
        yield s


def test_offline_edits_survive_reload_and_reopen_and_reach_the_server(field_stack: Stack, browser: Any) -> None:
    org = app.make_org(field_stack, "off-")
    context = browser.new_context()
    try:
        page = context.new_page()
        app.sign_in(page, org, "ana")
        assert set(app.listed(page)) == set(org.shared)
        assert app.local_ids(page).isdisjoint(org.other)
        app.wait_service_worker(page)
        # The entity metadata arrived with the download (the forms and offline validation use it).
        meta = page.evaluate("() => window.offsync.entity('account')")
        assert meta["display_name"] == "Account" and meta["primary_attribute"] == "name"
        assert meta["attributes"]["name"] == {"type": "string", "required": True, "max_length": 160}

        context.set_offline(True)
        page.reload()
        page.wait_for_selector("#workspace:not([hidden])")
        page.wait_for_function("() => document.querySelectorAll('#records li.record').length > 0")
        assert set(app.listed(page)) == set(org.shared), "the records come from IndexedDB with no network"
        assert page.get_attribute("#status", "data-online") == "false"

        edited = org.shared[:3]
        for i, rid in enumerate(edited):
            app.edit_name(page, rid, f"off-Edited {i}")
        # Offline, the form refuses what the server would: a new account without its name.
        page.click("#new-record")
        page.click("#save")
        assert "name is required" in page.inner_text("#form-error")
        page.click("#cancel")
        app.create_account(page, "off-Created offline")
        deleted = org.shared[3]
        app.delete_record(page, deleted)
        assert app.pending(page) == 5
        rows = app.listed(page)
        assert deleted not in rows
        assert [t for t in rows.values() if "off-Created offline" in t], rows

        # Close the tab and open the app again, still offline.
        page.close()
        page = context.new_page()
        page.goto(org.app_url)
        page.wait_for_selector("#workspace:not([hidden])")
        page.wait_for_function("() => document.querySelectorAll('#records li.record').length > 0")
        assert app.pending(page) == 5, "the outbox survived closing the tab"
        rows = app.listed(page)
        for i, rid in enumerate(edited):
            assert f"off-Edited {i}" in rows[rid] and "pending" in rows[rid]
        created = [rid for rid, t in rows.items() if "off-Created offline" in t]
        assert len(created) == 1

        with org.records() as api:
            before = {r["id"]: r for r in app.ok(api.get("/v1/records/account", params={"limit": 500}))["items"]}

        context.set_offline(False)
        app.wait_synced(page)
        assert app.pending(page) == 0

        def server_has_them() -> bool:
            return all(
                (org.server_record(rid) or {}).get("attributes", {}).get("name") == f"off-Edited {i}"
                for i, rid in enumerate(edited)
            )

        until(server_has_them, timeout=10, message="the 3 edits on the server")
        assert org.server_record(deleted) is None
        new = org.server_record(created[0])
        assert new is not None and new["attributes"] == {"name": "off-Created offline"}
        # Exactly those changes: every other record is as it was.
        with org.records() as api:
            after = {r["id"]: r for r in app.ok(api.get("/v1/records/account", params={"limit": 500}))["items"]}
        changed = {
            rid
            for rid in set(before) | set(after)
            if before.get(rid, {}).get("version") != after.get(rid, {}).get("version")
        }
        assert changed == {*edited, deleted, created[0]}
    finally:
        context.close()
