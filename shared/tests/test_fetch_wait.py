"""The adaptive fetch wait: short while records flow, stretched to the idle wait at rest."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared.fetch_wait import AdaptiveWait

# (polls as (seconds since start, got records), expected wait after each)
CASES = [
    ("starts short", [(0.1, False)], [5]),
    ("stays short within the hot window", [(0.5, False), (0.9, False)], [5, 5]),
    ("stretches after the hot window", [(1.0, False), (1.5, False), (2.0, False)], [20, 80, 320]),
    (
        "caps at the idle wait",
        [(1.0, False), (1.5, False), (2.0, False), (2.5, False), (3.0, False)],
        [20, 80, 320, 500, 500],
    ),
    ("a record snaps back to short", [(1.0, False), (1.5, False), (1.6, True)], [20, 80, 5]),
    ("hot window restarts at the record", [(3.0, True), (3.5, False), (4.0, False), (4.5, False)], [5, 5, 20, 80]),
]


@pytest.mark.parametrize(("polls", "expected"), [(p, e) for _, p, e in CASES], ids=[c[0] for c in CASES])
def test_wait_after_polls(polls: list[tuple[float, bool]], expected: list[int]) -> None:
    w = AdaptiveWait(active_ms=5, idle_ms=500, started_at=0.0, hot_s=1.0, factor=4)
    assert [w.after_poll(t, got) for t, got in polls] == expected


def test_resting_once_at_the_idle_wait() -> None:
    w = AdaptiveWait(active_ms=5, idle_ms=20, started_at=0.0, hot_s=0.0, factor=4)
    assert not w.resting
    w.after_poll(0.1, False)
    assert w.resting


@pytest.mark.parametrize(
    "kwargs",
    [
        {"active_ms": 0, "idle_ms": 500},
        {"active_ms": 50, "idle_ms": 10},
        {"active_ms": 5, "idle_ms": 500, "factor": 1},
        {"active_ms": 5, "idle_ms": 500, "hot_s": -1.0},
    ],
    ids=["zero active", "idle below active", "factor 1", "negative hot window"],
)
def test_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdaptiveWait(started_at=0.0, **kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.tuples(st.floats(0, 0.6), st.booleans()), max_size=60),
    st.integers(1, 50),
    st.integers(50, 2000),
)
def test_always_between_active_and_idle_and_short_right_after_records(
    steps: list[tuple[float, bool]], active: int, idle: int
) -> None:
    w = AdaptiveWait(active_ms=active, idle_ms=idle, started_at=0.0)
    now = 0.0
    for dt, got in steps:
        now += dt
        wait = w.after_poll(now, got)
        assert active <= wait <= idle
        if got:
            assert wait == active


def test_a_ring_snaps_back_to_short_and_restarts_the_hot_window() -> None:
    w = AdaptiveWait(active_ms=5, idle_ms=500, started_at=0.0, hot_s=1.0, factor=4)
    for t in (1.0, 1.5, 2.0, 2.5):
        w.after_poll(t, False)
    assert w.resting
    assert w.ring(3.0) == 5
    assert not w.resting
    assert not w.cooling
    assert w.after_poll(3.9, False) == 5
    assert w.after_poll(4.0, False) == 20
    assert w.cooling
