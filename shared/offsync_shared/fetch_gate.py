"""Holds a consumer's next fetch after an empty answer until the doorbell rings (or a hold runs
out), so that on the embedded broker a record is fetched as soon as its producer rang instead of
when a held fetch's wait runs out.

The embedded broker (Tansu) answers a fetch only once its wait has passed, even when records were
there from the start or arrived meanwhile, and a fetch it holds cannot be cut short: every
consumer hop cost up to the whole fetch wait. With a bell, a consumer instead fetches with the
shortest wait that broker honours (``BROKER_WAIT_MS``: a wait of 0 makes it answer with no
partition at all) and waits on its own side, where a ring ends the wait at once; the hold
(``hold_s``) bounds what a record whose producer did not ring waits, as the fetch wait did.

No ring can be missed: producers ring only after the broker acknowledged their records, so a fetch
sent after a ring was heard finds the record it announced. The gate counts rings and holds only
when none was heard since the empty fetch was sent; otherwise it fetches again at once.

It wraps aiokafka's per-fetch coroutine (``Fetcher._proc_fetch_request``, pinned release): the
fetcher sends no new fetch to a broker while the previous one's coroutine runs, so holding that
coroutine holds the next fetch. Apache Kafka answers a held fetch as soon as data arrives and
needs none of this (no bell there, no gate).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

# The shortest fetch wait the embedded broker honours (it answers a fetch with a wait of 0 with
# no partitions at all). It still sleeps this long before answering, records or not.
BROKER_WAIT_MS = 1

FetchOnce = Callable[[Any, int, Any], Awaitable[bool]]


class FetchGate:
    """Rings counted and one event to wake holders; ``install`` puts it in front of a fetcher."""

    def __init__(self, hold_s: float) -> None:
        if hold_s <= 0:
            raise ValueError(f"bad fetch hold: {hold_s} s")
        self.hold_s = hold_s
        self.rings = 0
        self.holds = 0  # empty answers after which the next fetch was held
        self.cut_short = 0  # of those, holds a ring ended before hold_s
        self._rung = asyncio.Event()

    def ring(self) -> None:
        """Records are (or may be) waiting: end any hold now, and the next one before it starts."""
        self.rings += 1
        self._rung.set()

    async def hold(self, rings_before: int) -> None:
        """After an empty answer to a fetch sent when ``rings_before`` rings had been heard: wait
        for the next ring, at most ``hold_s``; not at all if one came while the fetch was out."""
        if self.rings != rings_before:
            return
        self._rung.clear()  # no await since the count was read: no ring can slip between
        self.holds += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rung.wait(), self.hold_s)
            self.cut_short += 1

    def install(self, fetcher: Any) -> bool:
        """Hold ``fetcher``'s next fetch after each empty answer. False (nothing installed) if
        this aiokafka has no per-fetch coroutine to wrap: the consumer then keeps held fetches."""
        original: FetchOnce | None = getattr(fetcher, "_proc_fetch_request", None)
        if original is None or not callable(original):
            return False

        async def gated(assignment: Any, node_id: int, request: Any) -> bool:
            rings_before = self.rings
            got = await original(assignment, node_id, request)
            task = asyncio.current_task()
            if got or not assignment.active or (task is not None and task.cancelling()):
                return got
            try:
                await self.hold(rings_before)
            except asyncio.CancelledError:
                # Closing, or the partitions were unassigned: aiokafka's own fetch coroutine
                # returns False on cancellation too (its close() awaits it unguarded).
                pass
            return got

        fetcher._proc_fetch_request = gated  # noqa: SLF001 - see the module docstring
        return True
