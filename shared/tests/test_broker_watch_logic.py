"""log_shrunk: a partition whose end offset went down, or that is gone, means the broker lost
what it held (a Kafka log never shrinks)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared.broker_watch import log_shrunk

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


@pytest.mark.parametrize(
    ("before", "now", "shrunk"),
    [
        ({}, {A0: 5}, []),  # first look: nothing to compare with
        ({A0: 5}, {A0: 5}, []),  # quiet
        ({A0: 5}, {A0: 9}, []),  # grew
        ({A0: 5}, {A0: 2}, [A0]),  # re-created, shorter than before
        ({A0: 0}, {A0: 0}, []),  # empty before and after: nothing to lose
        ({A0: 5, A1: 3}, {A0: 7}, [A1]),  # a partition gone
        ({A0: 5, B0: 3}, {A0: 0, B0: 0}, [A0, B0]),
        ({A0: 5}, {A0: 5, B0: 0}, []),  # a new partition is no loss
    ],
)
def test_log_shrunk(
    before: dict[TopicPartition, int], now: dict[TopicPartition, int], shrunk: list[TopicPartition]
) -> None:
    assert log_shrunk(before, now) == shrunk


ends = st.dictionaries(st.sampled_from([A0, A1, B0]), st.integers(0, 1000))


@given(ends, st.dictionaries(st.sampled_from([A0, A1, B0]), st.integers(0, 1000)))
def test_growth_is_never_loss(before: dict[TopicPartition, int], extra: dict[TopicPartition, int]) -> None:
    grown = {tp: end + extra.get(tp, 0) for tp, end in before.items()}
    assert log_shrunk(before, grown) == []
    assert set(log_shrunk(before, {})) == set(before)


async def test_a_failing_listener_is_called_again_until_it_succeeds() -> None:
    """The relay's replay needs the database; when it is away at that moment, the replay is owed
    and retried each round, never dropped."""
    from offsync_shared.broker_watch import BrokerWatch

    calls: list[str] = []
    failures = iter([True, True, False])

    async def flaky() -> None:
        calls.append("flaky")
        if next(failures):
            raise ConnectionError("database away")

    async def fine() -> None:
        calls.append("fine")

    w = BrokerWatch("127.0.0.1:1", "", 1)
    w.on_lost(flaky)
    w.on_lost(fine)
    w._owed = list(w.listeners)  # what _recover leaves after a loss
    for _ in range(4):
        await w._call_owed()
    assert calls == ["flaky", "fine", "flaky", "flaky"]
    assert w._owed == []


@pytest.mark.parametrize(
    ("position", "fetched_high", "listed_end", "past"),
    [
        (10, 10, 10, False),  # caught up
        (10, 10, 1, False),  # the embedded broker's lagging ListOffsets: not a lost log
        (300, 5, 5, True),  # re-created log, shorter than where the consumer stood
        (300, 5, 300, False),  # the two answers disagree: look again later
        (10, None, 1, False),  # no fetch answer yet for this position
        (10, 3, None, False),  # ListOffsets did not answer for it
        (0, 0, 0, False),
    ],
    ids=["caught-up", "listoffsets-lags", "lost", "disagree", "no-fetch-yet", "no-listed-end", "empty"],
)
def test_past_end(position: int, fetched_high: int | None, listed_end: int | None, past: bool) -> None:
    from offsync_shared.log_ends import past_end

    assert past_end(position, fetched_high, listed_end) is past
