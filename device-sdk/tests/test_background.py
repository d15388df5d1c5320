"""Background / metered mode: when a device that is not connected live syncs next."""

from __future__ import annotations

import pytest

from offsync_device.background import background_delay_s, next_sync_at
from offsync_shared import protocol as p


@pytest.mark.parametrize(
    "intervals,delay",
    [({}, 300.0), ({"account": 60}, 3600.0), ({"account": 60, "contact": 15}, 900.0)],
    ids=["no-welcome-yet", "one-entity", "shortest-wins"],
)
def test_background_syncs_each_entity_within_its_interval(intervals: dict[str, int], delay: float) -> None:
    assert background_delay_s(intervals) == delay
    assert next_sync_at(None, intervals, now=100.0) == 100.0
    assert next_sync_at(1000.0, intervals, now=1200.0) == 1000.0 + delay


def test_welcome_sync_intervals_round_trip_and_are_optional() -> None:
    w = p.Welcome("u1", ("b",), 20.0, {"max_changes": 5}, sync_intervals={"account": 60})
    assert p.decode_server(p.encode(w)) == w
    old = p.Welcome("u1", ("b",), 20.0, {"max_changes": 5})
    assert b"sync_intervals" not in p.encode(old) and p.decode_server(p.encode(old)) == old
