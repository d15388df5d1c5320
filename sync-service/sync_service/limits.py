"""Token-bucket rate limits (pure; the clock is passed in): per-device frames, per-process connections."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens added per second
    burst: float  # bucket capacity
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float, n: float = 1.0) -> bool:
        """Spend ``n`` tokens if available at time ``now``."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def retry_after(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are available (as of the last take)."""
        missing = n - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate


@dataclass(slots=True)
class ComeBackSlots:
    """When to tell a refused client to come back: one slot per refusal, spaced at the rate the
    bucket admits, so a refused crowd returns as fast as it can be let in. Told only "when the
    next token comes", the whole crowd would return at once and most of it be refused again
    (the reconnect workload's figures are in docs/performance.md)."""

    rate: float  # slots per second: the bucket's refill rate
    horizon: float = 60.0  # never tell anyone to wait longer than this
    last: float = float("-inf")

    def wait(self, now: float, earliest: float) -> float:
        """Seconds the client refused at ``now`` should wait: at least ``earliest``, after every
        slot already handed out."""
        slot = min(max(self.last + 1.0 / self.rate, now + earliest), now + self.horizon)
        self.last = max(self.last, slot)
        return slot - now
