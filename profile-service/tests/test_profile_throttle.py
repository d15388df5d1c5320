"""The sign-in rate limit's decision, as a table and against a naive reference (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profile_service.throttle import header_value, retry_after

ROWS = [
    # (failures, limit, window, now, expected wait or None)
    ([], 3, 60, 100, None),
    ([90, 95], 3, 60, 100, None),
    ([90, 95, 99], 3, 60, 100, 50),
    ([10, 90, 95, 99], 3, 60, 100, 50),  # the oldest is out of the window already
    ([30, 40, 50], 3, 60, 100, None),  # all aged out
    ([41, 42, 43, 44], 3, 60, 100, 2),  # dropping below 3 needs 41 and 42 gone: 42 + 60 - 100
]


@pytest.mark.parametrize(
    ("failures", "limit", "window", "now", "expected"),
    ROWS,
    ids=["none", "under", "at-limit", "one-aged-out", "all-aged-out", "over-limit"],
)
def test_retry_after_table(
    failures: list[float], limit: int, window: float, now: float, expected: float | None
) -> None:
    assert retry_after(failures, limit, window, now) == expected


@given(
    st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=30),
    st.integers(min_value=1, max_value=10),
    st.floats(min_value=1, max_value=500, allow_nan=False),
    st.floats(min_value=0, max_value=1500, allow_nan=False),
)
def test_waiting_the_answer_is_enough_and_needed(failures: list[float], limit: int, window: float, now: float) -> None:
    def allowed(at: float) -> bool:  # naive reference: count failures in the window at time ``at``
        return sum(1 for t in failures if t <= at and at - t < window) < limit

    failures = [t for t in failures if t <= now]
    wait = retry_after(failures, limit, window, now)
    assert (wait is None) == allowed(now)
    if wait is not None:
        assert allowed(now + wait + 1e-6)
        assert wait <= window + 1e-6


@pytest.mark.parametrize(("seconds", "header"), [(0.001, "1"), (1.0, "1"), (1.2, "2"), (299.5, "300")])
def test_retry_after_header_rounds_up(seconds: float, header: str) -> None:
    assert header_value(seconds) == header
