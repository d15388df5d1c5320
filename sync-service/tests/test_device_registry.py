"""The device registry's bookkeeping (what it would write, and the metrics it feeds), driven by
fake sessions; the SQL runs in the console's browser tests against the real stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from offsync_shared import metrics
from sync_service.devices import HEARTBEAT_S, DeviceRegistry


@dataclass
class FakeSession:
    user_id: str = "u1"
    device_id: str = "phone"
    checkpointed: int = -1
    pending: dict[str, Any] = field(default_factory=dict)
    sent_ops: int = 0
    answered: int = 0
    last_error: str | None = None
    hello_info: tuple[str | None, int | None, int | None] = (None, None, None)


def registry() -> DeviceRegistry:
    return DeviceRegistry(None, gateway_id="g1", wall=lambda: 1_700_000_000.0)


def test_connect_records_what_the_device_reported() -> None:
    r = registry()
    r.connected("u1", "phone", client="sdk/1", records=10, pending=2, profile_id="p", profile_version=3)
    row = r._rows[("u1", "phone")]
    assert row["online"] is True and row["gateway"] == "g1"
    assert (row["client"], row["records_held"], row["pending_uploads"], row["profile_version"]) == ("sdk/1", 10, 2, 3)


def test_a_checkpoint_is_a_completed_sync_written_once() -> None:
    r = registry()
    s = FakeSession()
    r.observe([s])
    assert ("u1", "phone") not in r._rows  # mid-download: not a completed sync
    s.checkpointed = 5
    r.observe([s])
    assert r._rows.pop(("u1", "phone"))["cursor"] == 5
    r.observe([s])
    assert ("u1", "phone") not in r._rows  # nothing changed: nothing to write


def test_counters_become_metrics_and_answers_drain_pending() -> None:
    r = registry()
    s = FakeSession()
    delivered = metrics.OPS_DELIVERED._value.get()
    answered = metrics.UPLOADS_ANSWERED._value.get()
    s.sent_ops, s.answered = 7, 1
    r.observe([s])
    s.sent_ops = 9
    r.observe([s])
    assert metrics.OPS_DELIVERED._value.get() - delivered == 9
    assert metrics.UPLOADS_ANSWERED._value.get() - answered == 1
    assert r._rows[("u1", "phone")]["pending_uploads"] == 0


def test_errors_refusals_and_disconnects_are_kept() -> None:
    r = registry()
    s = FakeSession(last_error="rate_limited: slow down")
    r.observe([s])
    r.disconnected(s)
    row = r._rows[("u1", "phone")]
    assert row["last_error"] == "rate_limited: slow down" and row["online"] is False
    r.refused("u2", "tab", "no_profile: none")
    assert r._rows[("u2", "tab")]["last_error"] == "no_profile: none"


async def test_flush_without_a_database_keeps_nothing_pending() -> None:
    r = registry()
    r.refused("u2", "tab", "x")
    assert await r.flush() == 0
    assert not r._rows


def test_a_live_devices_row_is_written_at_its_first_checkpoint_then_with_its_heartbeat() -> None:
    clock = [1_700_000_000.0]
    r = DeviceRegistry(None, gateway_id="g1", wall=lambda: clock[0])
    s = FakeSession(checkpointed=5)
    r.observe([s])
    assert r._rows.pop(("u1", "phone"))["cursor"] == 5  # the session's first checkpoint: at once
    for position in (6, 7):  # live changes every second: not a row each time
        clock[0] += 1
        s.checkpointed = position
        r.observe([s])
        assert ("u1", "phone") not in r._rows
    clock[0] += HEARTBEAT_S
    r.observe([s])
    row = r._rows.pop(("u1", "phone"))
    assert row["online"] is True and row["seen_at"].timestamp() == clock[0]
    # The newest position, stamped when the device reached it, not when it was written.
    assert row["cursor"] == 7 and row["synced_at"].timestamp() == 1_700_000_002.0
    clock[0] += 1
    s.checkpointed = 8
    r.observe([s])
    assert ("u1", "phone") not in r._rows
    r.disconnected(s)
    row = r._rows[("u1", "phone")]
    assert row["cursor"] == 8 and row["online"] is False  # the last position is never lost


def test_heartbeats_of_devices_that_connected_together_are_spread_over_the_interval() -> None:
    clock = [1_700_000_000.0]
    r = DeviceRegistry(None, gateway_id="g1", wall=lambda: clock[0])
    sessions = [FakeSession(device_id=f"d{i}") for i in range(200)]
    r.observe(sessions)
    per_second = []
    for _ in range(int(HEARTBEAT_S) * 2):
        clock[0] += 1
        r.observe(sessions)
        per_second.append(len(r._rows))
        r._rows.clear()
    assert sum(per_second) == 200 * 2  # each device beat twice in two intervals…
    assert max(per_second) < 100  # …but never all of them in one statement
