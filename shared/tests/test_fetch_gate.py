"""The fetch gate: after an empty answer the next fetch waits for a ring (at most the hold), not at
all if a ring came while the fetch was out, and never after records, a dropped assignment or a
cancellation. A stand-in fetcher plays aiokafka's per-fetch coroutine (the real one is covered by
tests/integration/test_consumer_fetch_gate.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from offsync_shared.fetch_gate import FetchGate

HOLD_S = 0.3


@dataclass
class _Assignment:
    active: bool = True


@dataclass
class _Fetcher:
    """Answers each fetch with ``answers`` in turn; a ring may come while a fetch is out."""

    answers: list[bool]
    ring_during: FetchGate | None = None
    calls: int = field(default=0)

    async def _proc_fetch_request(self, assignment: object, node_id: int, request: object) -> bool:
        self.calls += 1
        await asyncio.sleep(0)  # the broker's answer arrives later
        if self.ring_during is not None:
            self.ring_during.ring()
        return self.answers.pop(0)


async def _timed_fetch(fetcher: _Fetcher, assignment: _Assignment | None = None) -> tuple[bool, float]:
    started = time.monotonic()
    got = await fetcher._proc_fetch_request(assignment or _Assignment(), 0, None)
    return got, time.monotonic() - started


async def test_an_empty_answer_holds_the_next_fetch_for_the_hold() -> None:
    gate, fetcher = FetchGate(HOLD_S), _Fetcher([False])
    assert gate.install(fetcher)
    got, took = await _timed_fetch(fetcher)
    assert got is False
    assert took >= HOLD_S * 0.9
    assert (gate.holds, gate.cut_short) == (1, 0)


async def test_a_ring_ends_the_hold_at_once() -> None:
    gate, fetcher = FetchGate(5.0), _Fetcher([False])
    gate.install(fetcher)
    asyncio.get_running_loop().call_later(0.05, gate.ring)
    got, took = await _timed_fetch(fetcher)
    assert got is False
    assert took < 1.0
    assert (gate.holds, gate.cut_short) == (1, 1)


async def test_a_ring_while_the_fetch_was_out_means_no_hold() -> None:
    gate = FetchGate(5.0)
    fetcher = _Fetcher([False], ring_during=gate)
    gate.install(fetcher)
    _, took = await _timed_fetch(fetcher)
    assert took < 1.0
    assert gate.holds == 0


@pytest.mark.parametrize(
    "assignment", [_Assignment(active=True), _Assignment(active=False)], ids=["records", "unassigned"]
)
async def test_records_or_a_dropped_assignment_are_not_held(assignment: _Assignment) -> None:
    gate = FetchGate(5.0)
    fetcher = _Fetcher([assignment.active])  # records for the active one, an empty answer for the other
    gate.install(fetcher)
    _, took = await _timed_fetch(fetcher, assignment)
    assert took < 1.0
    assert gate.holds == 0


async def test_a_cancelled_hold_returns_like_aiokafkas_own_fetch() -> None:
    gate, fetcher = FetchGate(5.0), _Fetcher([False])
    gate.install(fetcher)
    task = asyncio.create_task(fetcher._proc_fetch_request(_Assignment(), 0, None))
    for _ in range(1000):  # until the hold has begun (a few loop turns)
        if gate.holds:
            break
        await asyncio.sleep(0)
    assert gate.holds == 1
    task.cancel()
    assert await task is False


def test_nothing_to_wrap_installs_nothing() -> None:
    assert FetchGate(1.0).install(object()) is False


def test_a_hold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bad fetch hold"):
        FetchGate(0.0)
