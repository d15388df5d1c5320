"""Decides how long a consumer's next fetch may wait on a broker that answers a held fetch only
when the wait runs out (the embedded Tansu): short while records flow, long at rest.

On such a broker the fetch wait is both a latency floor (a record produced just after a fetch
started waits that long) and the idle cost (a consumer at rest fetches once per wait). A fixed
short wait buys latency with CPU at rest; this policy keeps the short wait for ``hot_s`` after
the last record, then stretches it ``factor``-fold per empty poll up to ``idle_ms``. The price is
paid by the first record after a quiet spell, which waits up to ``idle_ms`` per consumer hop;
docs/performance.md measures it (``live_after_idle``). Apache Kafka answers a held fetch as soon
as data arrives, so it keeps one fixed wait and never uses this.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveWait:
    """The fetch wait as a function of when records last arrived. Pure: the caller passes time."""

    active_ms: int
    idle_ms: int
    started_at: float
    hot_s: float = 1.0
    factor: int = 4
    current_ms: int = field(init=False)
    _last_records_at: float = field(init=False)

    def __post_init__(self) -> None:
        if self.active_ms <= 0 or self.idle_ms < self.active_ms or self.factor < 2 or self.hot_s < 0:
            raise ValueError(
                f"bad adaptive fetch wait: active {self.active_ms} ms, idle {self.idle_ms} ms, "
                f"factor {self.factor}, hot {self.hot_s} s"
            )
        self.current_ms = self.active_ms
        self._last_records_at = self.started_at  # start-up catches up: treat it as busy

    def after_poll(self, now: float, got_records: bool) -> int:
        """The wait for the fetches after a poll that did (or did not) return records."""
        if got_records:
            self._last_records_at = now
            self.current_ms = self.active_ms
        elif now - self._last_records_at >= self.hot_s:
            self.current_ms = min(self.idle_ms, self.current_ms * self.factor)
        return self.current_ms

    def ring(self, now: float) -> int:
        """A producer rang the doorbell: records are on their way, so wait as if they had come."""
        return self.after_poll(now, got_records=True)

    @property
    def resting(self) -> bool:
        return self.current_ms == self.idle_ms

    @property
    def cooling(self) -> bool:
        """Past the hot window: the wait has begun to stretch (a consumer with a doorbell pauses
        here rather than hold ever longer fetches)."""
        return self.current_ms > self.active_ms
