"""Finding 3: `like` filters ran as a backtracking regex in publish-service: a 192 kB value
against `%foo%bar%` held every device's updates for 12.6 s. The evaluator is now linear in the
value (offsync_shared.domain.operators: the runs between `%` placed leftmost, literal runs
found with str.find, runs with `_` with a shift-and automaton); PostgreSQL's LIKE, which the SQL
compiler emits (over lower()), is checked on the same input. Bounds are generous (seconds, not the milliseconds it takes): they catch
quadratic or exponential work, not a slow machine."""

from __future__ import annotations

import time

import asyncpg
import pytest

from offsync_shared.domain.operators import like
from offsync_stack.infra import Infra
from publish_service.rules.conditions import static_leaf_holds

HOSTILE = "foo" * (192 * 1024 // 3)  # 192 kB of "foo", no "bar": the regex's worst case


def test_the_evaluator_answers_a_hostile_value_at_once() -> None:
    start = time.process_time()
    assert like(HOSTILE, "%foo%bar%") is False
    assert static_leaf_holds("like", HOSTILE, "%foo%bar%") is False
    assert static_leaf_holds("not-like", HOSTILE, "%foo%bar%") is True
    assert static_leaf_holds("like", HOSTILE + "bar", "%foo%bar%") is True
    assert time.process_time() - start < 1.0


def test_underscore_runs_stay_linear_on_a_huge_value() -> None:
    """`_` inside a run defeats a plain substring search; the matcher still looks at each
    character once: 4 MB answered within a generous bound (a pairwise search would not end)."""
    value = "fxo" * (4 * 1024 * 1024 // 3)
    start = time.process_time()
    assert not like(value, "%f_o%b_r%")
    assert like(value + "bar", "%f_o%b_r")
    assert time.process_time() - start < 5.0


@pytest.mark.integration
async def test_postgres_like_is_fast_on_the_same_input(infra: Infra) -> None:
    conn = await asyncpg.connect(await infra.create_database("like"))
    try:
        start = time.monotonic()
        matched = await conn.fetchval("SELECT lower($1::text) LIKE lower('%foo%bar%')", HOSTILE)
        assert matched is False
        assert time.monotonic() - start < 2.0
    finally:
        await conn.close()
