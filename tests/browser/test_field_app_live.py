"""Two people of the same business unit, each in their own browser: a change one of them makes
reaches the other's screen live, over the connection already open, and neither ever holds a record
outside their set.

Issue #18's "within a second" is a speed figure: `make bench` measures it on the same path
(browser_live: commit to `db.watch`, p99 25-45 ms against a 50 ms target). Here the bound only
separates live from anything else (the app has no periodic sync; a reconnect would show as a new
socket): the suite runs on four workers sharing two cores, where this path took up to 1.5 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from offsync_stack.infra import Infra
from offsync_stack.testing import Stack
from tests.browser import field_app_org as app

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LIVE_WITHIN_MS = 5_000


@pytest.fixture(scope="module")
def field_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with app.running_stack(infra, "fieldlive", tmp_path_factory.mktemp("fieldlive-logs")) as s:
        yield s


def test_a_change_reaches_a_colleague_live_and_nothing_outside_the_set_does(field_stack: Stack, browser: Any) -> None:
    org = app.make_org(field_stack, "live-", accounts=3)
    ana_ctx, ben_ctx = browser.new_context(), browser.new_context()
    try:
        ana, ben = ana_ctx.new_page(), ben_ctx.new_page()
        app.sign_in(ana, org, "ana")
        app.sign_in(ben, org, "ben")
        assert set(app.listed(ben)) == set(org.shared)
        ben.evaluate("() => { window.firstSocket = window.offsync.client.ws; }")

        # Ana edits in the app; it reaches Ben's screen live.
        rid = org.shared[1]
        t0 = app.edit_name(ana, rid, "live-Edited by Ana")
        seen = app.wait_listed(ben, rid, "live-Edited by Ana", timeout_ms=LIVE_WITHIN_MS)
        print(f"Ben saw Ana's edit {seen - t0:.3f} s after she saved it")

        # Ana creates one; it reaches Ben live too.
        t0 = app.create_account(ana, "live-New from Ana")
        ben.wait_for_function(
            "() => [...document.querySelectorAll('#records li.record')].some(li => li.textContent.includes('live-New from Ana'))",
            timeout=LIVE_WITHIN_MS,
            polling="raf",
        )
        print(f"Ben saw Ana's new account {time.monotonic() - t0:.3f} s after she saved it")
        assert ben.evaluate("() => window.offsync.client.ws === window.firstSocket"), "Ben's app reconnected"

        # A server-side change inside the set arrives live; one outside it never does.
        with org.records() as api:
            app.ok(api.patch(f"/v1/records/account/{org.shared[2]}", json={"attributes": {"name": "live-Server edit"}}))
            app.ok(api.patch(f"/v1/records/account/{org.other[0]}", json={"attributes": {"name": "live-Outside"}}))
        app.wait_listed(ben, org.shared[2], "live-Server edit", timeout_ms=LIVE_WITHIN_MS)
        for page in (ana, ben):
            # The SDK's checksums agreed with the server's at every checkpoint (no repair needed).
            assert page.evaluate("() => window.offsync.client.refetched") == []
            held = app.local_ids(page)
            assert held.isdisjoint(org.other), "a record of another business unit reached the device"
            assert "live-Outside" not in page.inner_text("#records")
    finally:
        ana_ctx.close()
        ben_ctx.close()
