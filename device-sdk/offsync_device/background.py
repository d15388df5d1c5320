"""Decides when a device that is not connected live (background / metered mode) syncs next, from
the sync intervals of its profile's items (the welcome frame's ``sync_intervals``; pure).

A sync always brings every entity of the profile up to date, so syncing when the entity with the
shortest interval is due keeps every entity within its own interval."""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_INTERVAL_MINUTES = 5  # the profile item default; also used before the first welcome


def background_delay_s(intervals: Mapping[str, int]) -> float:
    """Seconds between background syncs: the shortest interval of the profile's entities."""
    minutes = min(intervals.values(), default=DEFAULT_INTERVAL_MINUTES)
    return max(1, minutes) * 60.0


def next_sync_at(last_sync: float | None, intervals: Mapping[str, int], now: float) -> float:
    """When the next background sync is due (now when the device never synced)."""
    if last_sync is None:
        return now
    return last_sync + background_delay_s(intervals)
