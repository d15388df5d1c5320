"""Finding 3: `like` filters ran as a backtracking regex in publish-service: a 192 kB value
against `%foo%bar%` held every device's updates for 12.6 s. The evaluator is now linear in the
value (offsync_shared.like); PostgreSQL's LIKE, which the SQL compiler emits, is checked on the
same input. Bounds are generous (seconds, not the milliseconds it takes): they catch
quadratic or exponential work, not a slow machine."""

from __future__ import annotations

import time

import asyncpg
import pytest

from offsync_shared import like as like_module
from offsync_shared.like import compile_like, like
from offsync_stack.infra import Infra
from publish_service.rules.conditions import static_leaf_holds

HOSTILE = "foo" * (192 * 1024 // 3)  # 192 kB of "foo", no "bar": the regex's worst case


def test_the_evaluator_answers_a_hostile_value_at_once() -> None:
    start = time.process_time()
    assert static_leaf_holds("like", HOSTILE, "%foo%bar%") is False
    assert static_leaf_holds("not-like", HOSTILE, "%foo%bar%") is True
    assert static_leaf_holds("like", HOSTILE + "bar", "%foo%bar%") is True
    assert time.process_time() - start < 1.0


def test_the_work_grows_linearly_with_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, not timed: every position the matcher looks at with `_` segments."""
    looked = 0
    real = like_module._fits

    def counting(seg: tuple[str | None, ...], value: str, at: int) -> bool:
        nonlocal looked
        looked += 1
        return real(seg, value, at)

    monkeypatch.setattr(like_module, "_fits", counting)
    pattern = compile_like("%f_o%b_r%")
    for n in (10_000, 40_000):
        looked = 0
        assert not pattern.matches("foo" * n)
        assert looked <= 3 * n + 10, (n, looked)  # one look per position, not per pair of positions
    assert like("x" * 10 + "bar", "%b_r")


@pytest.mark.integration
async def test_postgres_like_is_fast_on_the_same_input(infra: Infra) -> None:
    conn = await asyncpg.connect(await infra.create_database("like"))
    try:
        start = time.monotonic()
        matched = await conn.fetchval("SELECT $1::text LIKE '%foo%bar%'", HOSTILE)
        assert matched is False
        assert time.monotonic() - start < 2.0
    finally:
        await conn.close()
