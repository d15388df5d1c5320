"""The latency math of the benchmark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_bench.stats import percentile, summary_ms


@pytest.mark.parametrize(
    "samples, p, expected",
    [
        ([1.0], 50, 1.0),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4], 100, 4),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 1, 1),
        ([5, 1, 3], 50, 3),
    ],
    ids=["single", "even-median", "max", "p99-of-100", "p1", "unsorted"],
)
def test_percentile(samples: list[float], p: float, expected: float) -> None:
    assert percentile(samples, p) == expected


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200), st.floats(0.1, 100))
def test_percentile_is_a_sample_and_monotonic(samples: list[float], p: float) -> None:
    v = percentile(samples, p)
    assert v in samples
    assert percentile(samples, min(100.0, p + 5)) >= v


def test_empty_and_bad_p_refused() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_summary_in_ms() -> None:
    assert summary_ms([0.001, 0.002, 0.010]) == {"p50_ms": 2.0, "p99_ms": 10.0, "max_ms": 10.0, "samples": 3}
