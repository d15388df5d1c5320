"""When a consumer at rest pauses and what wakes it: the bell, unpaused partitions, the safety net."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared.rest_policy import RestPolicy, Wake

# (paused at, looked at, rung, unpaused partitions) -> why it wakes (None: stays paused)
WAKES = [
    ("nothing yet", 10.0, 11.0, False, False, None),
    ("the bell", 10.0, 10.1, True, False, Wake.BELL),
    ("the bell before the net", 10.0, 20.0, True, False, Wake.BELL),
    ("partitions a rebalance left unpaused", 10.0, 10.5, False, True, Wake.NEW_PARTITIONS),
    ("the bell before new partitions", 10.0, 10.5, True, True, Wake.BELL),
    ("the safety net, just not yet", 10.0, 14.99, False, False, None),
    ("the safety net", 10.0, 15.0, False, False, Wake.SAFETY_NET),
]


@pytest.mark.parametrize(
    ("paused_at", "now", "rung", "unpaused", "expected"),
    [c[1:] for c in WAKES],
    ids=[c[0] for c in WAKES],
)
def test_wake(paused_at: float, now: float, rung: bool, unpaused: bool, expected: Wake | None) -> None:
    p = RestPolicy(safety_net_s=5.0)
    p.pause(paused_at)
    assert p.wake(now, rung=rung, unpaused_partitions=unpaused) == expected
    assert p.paused == (expected is None)


# (woken by, resting, looked, seconds after the wake) -> may it pause again
PAUSES = [
    ("not resting", Wake.BELL, False, True, 5.0, False),
    ("resting after the bell", Wake.BELL, True, False, 0.0, True),
    ("resting after new partitions", Wake.NEW_PARTITIONS, True, False, 0.0, True),
    ("the safety net's look not answered yet", Wake.SAFETY_NET, True, False, 0.5, False),
    ("the safety net's look answered", Wake.SAFETY_NET, True, True, 0.1, True),
    ("the safety net's look never answered (broker away)", Wake.SAFETY_NET, True, False, 2.0, True),
]


@pytest.mark.parametrize(
    ("wake", "resting", "looked", "after", "expected"), [c[1:] for c in PAUSES], ids=[c[0] for c in PAUSES]
)
def test_may_pause_after_a_wake(wake: Wake, resting: bool, looked: bool, after: float, expected: bool) -> None:
    p = RestPolicy(safety_net_s=5.0, probe_s=2.0)
    p.pause(0.0)
    woke_at = 5.0
    assert p.wake(woke_at, rung=wake is Wake.BELL, unpaused_partitions=wake is Wake.NEW_PARTITIONS) == wake
    assert p.probing == (wake is Wake.SAFETY_NET)
    assert p.may_pause(woke_at + after, resting=resting, looked=looked) == expected


def test_records_end_a_look() -> None:
    p = RestPolicy(safety_net_s=5.0, probe_s=2.0)
    p.pause(0.0)
    assert p.wake(5.0, rung=False, unpaused_partitions=False) is Wake.SAFETY_NET
    p.records_came()
    assert not p.probing
    assert p.may_pause(5.1, resting=True, looked=False)


def test_never_pauses_twice_or_wakes_unpaused() -> None:
    p = RestPolicy()
    assert p.wake(100.0, rung=True, unpaused_partitions=True) is None
    p.pause(1.0)
    assert not p.may_pause(2.0, resting=True)


def test_rejects_a_bad_policy() -> None:
    with pytest.raises(ValueError):
        RestPolicy(safety_net_s=0)
    with pytest.raises(ValueError):
        RestPolicy(probe_s=-1)


@given(
    net=st.floats(0.5, 30),
    looks=st.lists(st.tuples(st.floats(0, 3), st.booleans(), st.booleans()), min_size=1, max_size=40),
)
def test_a_paused_consumer_never_sleeps_past_the_safety_net(net: float, looks: list[tuple[float, bool, bool]]) -> None:
    """Whatever rings, a paused consumer looks again within its tick and wakes by the net; a
    bell always wakes it at once."""
    p = RestPolicy(safety_net_s=net, probe_s=0.5)
    now = 0.0
    p.pause(now)
    for step, rung, unpaused in looks:
        if p.paused:
            assert 0.0 <= p.next_look_in(now, 1.0) <= 1.0
            assert p.paused_at is not None
            assert now - p.paused_at <= net + 3.0
        now += step
        was_paused = p.paused
        why = p.wake(now, rung=rung, unpaused_partitions=unpaused)
        if was_paused and rung:
            assert why is Wake.BELL
        if was_paused and p.paused_at is not None:
            assert now - p.paused_at < net
        if not p.paused and p.may_pause(now + 1.0, resting=True):
            p.pause(now)
