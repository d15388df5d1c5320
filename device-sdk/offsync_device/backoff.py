"""Reconnect delays: exponential with full jitter (pure; the random source is injected), so a
fleet of devices that lost the same gateway does not come back in lockstep (failure mode 6)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.2
    cap: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, at_least: float = 0.0) -> float:
        """Delay before reconnect attempt ``attempt`` (0-based): uniform in [0, min(cap, base·factor^n)],
        never below a server-given ``retry_after``."""
        ceiling = min(self.cap, self.base * self.factor ** min(attempt, 60))
        return max(at_least, self.rng.uniform(0.0, ceiling))


def retry_after_from_reason(reason: str) -> float:
    """The server puts ``retry_after=<seconds>`` in 1013 close reasons."""
    marker = "retry_after="
    if marker not in reason:
        return 0.0
    try:
        return float(reason.split(marker, 1)[1].split()[0].rstrip(";,"))
    except ValueError:
        return 0.0
