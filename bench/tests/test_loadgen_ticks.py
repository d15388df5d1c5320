"""How an open-loop writer splits its changes into one request per tick."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_bench.loadgen import chunks_per_tick


@pytest.mark.parametrize(
    "n, rate, tick, sizes",
    [(10, 100, 0.05, [5, 5]), (7, 100, 0.05, [5, 2]), (3, 10, 0.01, [1, 1, 1]), (0, 100, 0.1, [])],
    ids=["even", "remainder", "at-least-one", "nothing"],
)
def test_chunks_per_tick(n: int, rate: float, tick: float, sizes: list[int]) -> None:
    assert [len(c) for c in chunks_per_tick(list(range(n)), rate, tick)] == sizes


@given(st.lists(st.integers(), max_size=300), st.integers(1, 1000), st.sampled_from([0.01, 0.05, 0.1]))
def test_chunks_keep_every_item_in_order(items: list[int], rate: int, tick: float) -> None:
    assert [x for c in chunks_per_tick(items, rate, tick) for x in c] == items
