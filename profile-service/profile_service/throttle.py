"""Decides whether a sign-in attempt may go ahead, from the recent failures of its user and its
client address (pure: the caller reads the failures and the clock)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """At most ``per_user`` failed sign-ins for one username and ``per_address`` from one client
    address within any ``window_s`` seconds; beyond that, attempts wait."""

    per_user: int = 5
    per_address: int = 50
    window_s: float = 300.0


def retry_after(failures: Sequence[float], limit: int, window_s: float, now: float) -> float | None:
    """Seconds until one more attempt is allowed, or None if it is allowed now.

    ``failures`` are the times of failed attempts (any order). An attempt is allowed while fewer
    than ``limit`` failures fall in the last ``window_s`` seconds; otherwise it must wait until
    enough of them age out of the window.
    """
    recent = sorted(t for t in failures if now - t < window_s)
    if len(recent) < limit:
        return None
    # The oldest failure that must leave the window for the count to drop below the limit.
    blocking = recent[len(recent) - limit]
    return max(blocking + window_s - now, 0.001)


def header_value(seconds: float) -> str:
    """Retry-After as whole seconds, rounded up (at least 1)."""
    return str(max(1, math.ceil(seconds)))
