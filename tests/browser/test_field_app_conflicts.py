"""Under both conflict settings of the organization: the server and an offline device edit the
same record; when the device comes back, the app shows the outcome the setting decides (client
wins: the device's value, on the server too; server wins: the server's value), and the conflicts
view says what happened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from offsync_stack.infra import Infra
from offsync_stack.testing import Stack
from tests.browser import field_app_org as app

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def field_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app.running_stack(infra, "fieldcf", tmp_path_factory.mktemp("fieldcf-logs")) as s:
        yield s


@pytest.mark.parametrize(("detection", "winner"), [(False, "device"), (True, "server")])
def test_app_shows_the_outcome_the_setting_decides(
    field_stack: Stack, browser: Any, detection: bool, winner: str
) -> None:
    org = app.make_org(field_stack, f"cf{int(detection)}-", accounts=2)
    org.set_conflict_detection(detection)
    context = browser.new_context()
    try:
        page = context.new_page()
        app.sign_in(page, org, "ben")
        rid = org.shared[0]

        context.set_offline(True)
        page.wait_for_function("() => !window.offsync.status.online")
        app.edit_name(page, rid, "Device edit")
        assert app.pending(page) == 1
        with org.records() as api:
            app.ok(api.patch(f"/v1/records/account/{rid}", json={"attributes": {"name": "Server edit"}}))

        context.set_offline(False)
        app.wait_synced(page)
        expected = "Device edit" if winner == "device" else "Server edit"
        app.wait_listed(page, rid, expected)
        server = org.server_record(rid)
        assert server is not None and server["attributes"]["name"] == expected

        page.click("#entities button[data-view='conflicts']")
        row = page.wait_for_selector(f"#conflicts tbody tr[data-id='{rid}']")
        assert row.get_attribute("data-status") == "conflict"
        code = row.get_attribute("data-code")
        assert code == ("client_wins" if winner == "device" else "server_wins")
        text = row.inner_text()
        assert ("your change won" if winner == "device" else "server's version was kept") in text
        assert "Device edit" in text  # what the device had sent
    finally:
        context.close()
