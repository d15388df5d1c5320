"""Pure verdicts on where a consumer stands against a partition log's end (no broker I/O)."""

from __future__ import annotations


def past_end(position: int, fetched_high: int | None, listed_end: int | None) -> bool:
    """Whether a consumer at ``position`` is beyond its partition's log, which only happens when
    the log was lost and re-created shorter. ``fetched_high`` is the high watermark the broker
    reported in its last fetch answer *for this position*; ``listed_end`` is what ListOffsets says.
    Both must agree: the embedded broker's ListOffsets lags its fetch high watermark after a
    multi-record batch (it named offset 1 for a partition holding 10), so the listed end alone
    looked "past the end" every few seconds on a fresh stack and the consumer re-read whole
    topics for ever. A fetch answer at a lost position carries the new, lower high watermark."""
    if fetched_high is None or listed_end is None:
        return False
    return position > fetched_high and position > listed_end
