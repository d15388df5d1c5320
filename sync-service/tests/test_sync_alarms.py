"""alarms.py: parked sessions share one timer per tick; stale entries never fire."""

from __future__ import annotations

from typing import Any

import pytest

from sync_service.alarms import TICK_S, Alarms


class FakeLoop:
    """time() and call_at() only: the alarms' view of an event loop."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Any, int]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, tick: int) -> None:
        self.timers.append((when, callback, tick))

    def advance(self, to: float) -> None:
        self.now = to
        due = sorted((t for t in self.timers if t[0] <= to), key=lambda t: t[0])
        self.timers = [t for t in self.timers if t[0] > to]
        for _, callback, tick in due:
            callback(tick)


class Sleeper:
    def __init__(self) -> None:
        self.alarm_tick = 0
        self.woken = 0

    def alarm(self) -> None:
        self.woken += 1


def test_one_timer_per_tick_for_many_sleepers() -> None:
    loop = FakeLoop()
    alarms = Alarms(loop)  # type: ignore[arg-type]
    sleepers = [Sleeper() for _ in range(100)]
    for s in sleepers:
        alarms.set(s, 20.0)
    assert len(loop.timers) == 1 and len(alarms) == 100
    loop.advance(20.0 - TICK_S)
    assert not any(s.woken for s in sleepers)
    loop.advance(20.0 + TICK_S)
    assert all(s.woken == 1 and s.alarm_tick == 0 for s in sleepers)
    assert len(alarms) == 0


@pytest.mark.parametrize(
    "steps,woken",
    [
        ([("set", 1.0)], 1),  # fires once
        ([("set", 1.0), ("cancel", 0)], 0),  # cancelled: its entry is skipped
        ([("set", 1.0), ("set", 3.0)], 1),  # re-armed later: only the later one fires
        ([("set", 3.0), ("set", 1.0)], 1),  # re-armed sooner: fires once, at the sooner
        ([("set", 1.0), ("set", 1.0)], 1),  # twice in the same tick: once
        ([("set", 0.0)], 1),  # due now: next tick
        ([("set", -5.0)], 1),  # overdue: next tick
    ],
)
def test_a_sleeper_wakes_once_for_its_latest_alarm(steps: list[tuple[str, float]], woken: int) -> None:
    loop = FakeLoop()
    alarms = Alarms(loop)  # type: ignore[arg-type]
    s = Sleeper()
    for op, delay in steps:
        if op == "set":
            alarms.set(s, delay)
        else:
            alarms.cancel(s)
    loop.advance(10.0)
    assert s.woken == woken
    assert len(alarms) == 0


def test_deadline_is_never_early_and_at_most_one_tick_late() -> None:
    loop = FakeLoop()
    loop.now = 123.456
    alarms = Alarms(loop)  # type: ignore[arg-type]
    alarms.set(Sleeper(), 2.0)
    (when, _, _) = loop.timers[0]
    assert 125.456 <= when <= 125.456 + TICK_S
