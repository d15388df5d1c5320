"""The pure revocation rules of device_access: which sessions a sessions.revoked event ends, and
how the admin schema's current state (ahead of the bucket store) refuses or holds a session."""

from __future__ import annotations

import pytest

from offsync_shared import protocol as p
from offsync_shared.events.sync_notify import SessionsRevoked
from sync_service.bucket_reads import LiveBatch, OpsPage
from sync_service.device_access import AccessFacts, Published, decide, membership_pending, revocation

OK = AccessFacts(True, True, True, "p", 3, "g", Published("p", 3))

FACTS = [
    ("published-and-applied", OK, None, False),
    ("reader-did-not-check", AccessFacts(True, True, True, "p", 3, "g"), None, False),
    ("left-every-profile", AccessFacts(True, True, True, "p", 3, "g", None), p.CLOSE_NO_PROFILE, False),
    ("republished-not-applied", AccessFacts(True, True, True, "p", 3, "g", Published("p", 4)), None, True),
    ("moved-not-applied", AccessFacts(True, True, True, "p", 3, "g", Published("q", 1)), None, True),
    ("disabled-while-pending", AccessFacts(True, False, True, "p", 3, "g", Published("p", 4)), p.CLOSE_FORBIDDEN, True),
    ("sign-in-revoked", AccessFacts(True, True, True, "p", 3, "g", Published("p", 3), True), p.CLOSE_REVOKED, False),
]


@pytest.mark.parametrize(("facts", "code", "pending"), [r[1:] for r in FACTS], ids=[r[0] for r in FACTS])
def test_admin_state_refuses_or_holds(facts: AccessFacts, code: int | None, pending: bool) -> None:
    refusal = decide(facts, "g")
    assert (refusal.close_code if refusal else None) == code
    assert membership_pending(facts) == pending


def _ev(**kw: object) -> SessionsRevoked:
    return SessionsRevoked.model_validate({"user_id": "u", "reason": "signed_out", **kw})


# (event, user, device, session id of the token) -> ends the session
SESSIONS = [
    ("listed-sign-in", _ev(session_ids=["s1"]), "u", "phone", "s1", True),
    ("other-sign-in", _ev(session_ids=["s1"]), "u", "phone", "s2", False),
    ("minted-token-not-listed", _ev(session_ids=["s1"]), "u", "phone", None, False),
    ("revoked-device", _ev(reason="device_revoked", device_id="phone"), "u", "phone", "s9", True),
    ("revoked-device-minted-token", _ev(reason="device_revoked", device_id="phone"), "u", "phone", None, True),
    ("other-device", _ev(reason="device_revoked", device_id="phone"), "u", "tablet", "s2", False),
    ("same-device-name-other-user", _ev(reason="device_revoked", device_id="phone"), "v", "phone", "s1", False),
    (
        "password-all-but-caller",
        _ev(reason="password_changed", all_sessions=True, except_session_id="s1"),
        "u",
        "tablet",
        "s2",
        True,
    ),
    (
        "password-caller-stays",
        _ev(reason="password_changed", all_sessions=True, except_session_id="s1"),
        "u",
        "phone",
        "s1",
        False,
    ),
    ("password-reset-all", _ev(reason="password_changed", all_sessions=True), "u", "phone", "s1", True),
]


@pytest.mark.parametrize(
    ("event", "user", "device", "sid", "ends"), [r[1:] for r in SESSIONS], ids=[r[0] for r in SESSIONS]
)
def test_which_sessions_a_revocation_ends(
    event: SessionsRevoked, user: str, device: str, sid: str | None, ends: bool
) -> None:
    refusal = revocation(event, user, device, sid)
    assert (refusal is not None) == ends
    if refusal is not None:
        assert refusal.close_code == p.CLOSE_REVOKED and refusal.reason.startswith("revoked: ")


CLEARS = [
    ("unchecked", None, "u", "g", True),
    ("cleared-same-generation", {"u": "g"}, "u", "g", True),
    ("cleared-token-without-generation", {"u": "g"}, "u", None, True),
    ("cleared-other-generation", {"u": "g2"}, "u", "g", False),
    ("not-cleared", {"v": "g"}, "u", "g", False),
]


@pytest.mark.parametrize(("cleared", "user", "gen", "ok"), [r[1:] for r in CLEARS], ids=[r[0] for r in CLEARS])
def test_a_read_is_sent_only_to_cleared_users(
    cleared: dict[str, str] | None, user: str, gen: str | None, ok: bool
) -> None:
    assert LiveBatch(rows=[], complete=True, states={}, members=set(), cleared=cleared).clears(user, gen) == ok
    page = OpsPage(
        ops=None, count=0, last=None, cleared=cleared is None or user in cleared, generation=(cleared or {}).get(user)
    )
    assert page.clears(gen) == ok
