"""Wakes parked sessions when their next turn is due: deadlines are rounded up to a tick and
one event-loop timer serves every session due in that tick, so an idle device costs a list
slot (8 B) and an int instead of a TimerHandle with its callback and context (~440 B each,
docs/performance.md, connections)."""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

TICK_S = 0.05  # a deadline fires at most this late; heartbeats and timeouts are seconds


class Sleeper(Protocol):
    """What an alarm wakes: it remembers the tick it is due in (0: none), so a stale entry of
    an earlier deadline is told apart from the current one."""

    alarm_tick: int

    def alarm(self) -> None: ...


class Alarms:
    """One per event loop (``for_loop``). Entries are not removed when a sleeper wakes early:
    they are skipped when their tick fires (``alarm_tick`` moved on), and dropped with it."""

    __slots__ = ("_loop", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[int, list[Sleeper]] = {}

    def set(self, sleeper: Sleeper, delay: float) -> None:
        """Wake ``sleeper`` after ``delay`` seconds (up to one tick later), replacing its
        earlier alarm."""
        tick = math.ceil((self._loop.time() + max(delay, 0.0)) / TICK_S)
        sleeper.alarm_tick = tick
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = []
            self._loop.call_at(tick * TICK_S, self._fire, tick)
        due.append(sleeper)

    @staticmethod
    def cancel(sleeper: Sleeper) -> None:
        sleeper.alarm_tick = 0

    def _fire(self, tick: int) -> None:
        for sleeper in self._due.pop(tick, ()):
            if sleeper.alarm_tick == tick:
                sleeper.alarm_tick = 0
                sleeper.alarm()

    def __len__(self) -> int:
        """Entries held (current and stale)."""
        return sum(len(d) for d in self._due.values())


_by_loop: dict[asyncio.AbstractEventLoop, Alarms] = {}


def for_loop(loop: asyncio.AbstractEventLoop | None = None) -> Alarms:
    """The alarms of ``loop`` (the running one by default)."""
    loop = loop or asyncio.get_running_loop()
    alarms = _by_loop.get(loop)
    if alarms is None:
        for old in [k for k in _by_loop if k.is_closed()]:  # tests run many loops
            del _by_loop[old]
        alarms = _by_loop[loop] = Alarms(loop)
    return alarms
