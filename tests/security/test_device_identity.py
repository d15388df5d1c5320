"""Finding 4: device ids were global. A token minted for bob naming ann's device id knocked
ann's session off (close 4009), and the two devices then knocked each other off forever. A
device is now (user, device): bob's "phone-1" and ann's "phone-1" are two devices, while ann
reconnecting her own phone-1 still replaces her older connection."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

from offsync_shared import protocol as p
from tests.security.conftest import Findings, device_token
from tests.security.wsclient import answers_ping, closed_with, open_session

pytestmark = pytest.mark.e2e


async def test_another_users_token_with_my_device_id_does_not_knock_me_off(findings: Findings) -> None:
    url = findings.stack.sync_ws
    ann = await open_session(url, device_token("ann", "phone-1"), "phone-1")
    bob = await open_session(url, device_token("bob", "phone-1"), "phone-1")
    try:
        # Both stay connected and served (before the fix ann was closed with 4009 here).
        assert await answers_ping(ann) and await answers_ping(bob)
        assert ann.close_code is None and bob.close_code is None
    finally:
        await ann.close()
        await bob.close()


async def test_my_own_reconnect_still_supersedes_my_older_connection(findings: Findings) -> None:
    url = findings.stack.sync_ws
    old = await open_session(url, device_token("ann", "tablet"), "tablet")
    new = await open_session(url, device_token("ann", "tablet"), "tablet")
    try:
        assert await closed_with(old) == p.CLOSE_SUPERSEDED
        assert await answers_ping(new)
    finally:
        await new.close()
        try:
            await old.close()
        except ConnectionClosed:
            pass
