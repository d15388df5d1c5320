"""Decides when a consumer on the embedded broker stops fetching at rest (pauses its partitions)
and what wakes it again: the doorbell, partitions it has not paused, or a slow safety-net timer.

Tansu answers a held fetch only when its wait runs out, so a consumer at rest still fetched
twice a second for ever. A paused consumer sends no fetch at all; producers ring a doorbell
(``offsync_shared.doorbell``) after the broker acknowledged a record, and the rung consumer
goes back to the short wait. It pauses as soon as its hot window ends (the first empty poll that
would stretch the wait), so no long held fetch is ever in flight when a bell rings. A missed
bell must cost latency, never data: a paused consumer also wakes every ``safety_net_s`` for one
short look (a fetch of every partition answered since the wake: ``looked``; at most ``probe_s``
if the broker does not answer) and pauses again if it found nothing. Partitions a rebalance just
assigned are unpaused (aiokafka keeps pause state per assignment), so they wake the consumer
too. Pure: the caller passes time and what it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Wake(StrEnum):
    BELL = "bell"  # a producer rang for one of its topics: records are expected, go hot
    NEW_PARTITIONS = "new_partitions"  # a rebalance (or a rewind) left partitions unpaused: go hot
    SAFETY_NET = "safety_net"  # nothing rang for safety_net_s: look once, pause again if empty


@dataclass
class RestPolicy:
    """Pause state of one consumer."""

    safety_net_s: float = 5.0
    probe_s: float = 2.0
    paused_at: float | None = field(default=None, init=False)
    probing_since: float | None = field(default=None, init=False)  # a safety-net look under way

    def __post_init__(self) -> None:
        if self.safety_net_s <= 0 or self.probe_s < 0:
            raise ValueError(f"bad rest policy: safety net {self.safety_net_s} s, probe {self.probe_s} s")

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def probing(self) -> bool:
        return self.probing_since is not None

    def may_pause(self, now: float, *, resting: bool, looked: bool = True) -> bool:
        """After an empty poll past the hot window (``resting``): pause, but during a safety-net
        look only once it ``looked`` (aiokafka drops a paused partition's fetch answer, so
        pausing earlier would see nothing), or after ``probe_s`` (a broker away: look later)."""
        if self.paused or not resting:
            return False
        return self.probing_since is None or looked or now - self.probing_since >= self.probe_s

    def pause(self, now: float) -> None:
        self.paused_at = now
        self.probing_since = None

    def records_came(self) -> None:
        """Records arrived: whatever woke the consumer, it is no longer just looking."""
        self.probing_since = None

    def wake(self, now: float, *, rung: bool, unpaused_partitions: bool) -> Wake | None:
        """While paused: whether to resume now, and why (the bell first: it says records wait)."""
        if self.paused_at is None:
            return None
        if rung:
            reason = Wake.BELL
        elif unpaused_partitions:
            reason = Wake.NEW_PARTITIONS
        elif now - self.paused_at >= self.safety_net_s:
            reason = Wake.SAFETY_NET
        else:
            return None
        self.paused_at = None
        self.probing_since = now if reason is Wake.SAFETY_NET else None
        return reason

    def next_look_in(self, now: float, tick_s: float) -> float:
        """How long a paused consumer may sleep before it must look again (bell or no bell)."""
        if self.paused_at is None:
            return 0.0
        return max(0.0, min(tick_s, self.paused_at + self.safety_net_s - now))
