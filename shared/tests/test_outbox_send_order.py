"""The writer's own send after its commit (``OutboxRelay.publish_committed``): rows for the
``first_topics`` go out, and are acknowledged, before the others; a failed part leaves exactly
its rows and the ones after it to the relay."""

from __future__ import annotations

import asyncio
from typing import Any

from offsync_shared.outbox import Message, OutboxRelay, _first_then_rest


class Recorder:
    """A publisher that records each send_many call (and fails the ones it is told to)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.sends: list[list[Message]] = []
        self.fail_on = fail_on

    async def send_many(self, messages: list[Message]) -> None:
        self.sends.append(messages)
        if self.fail_on == len(self.sends):
            raise ConnectionError("broker away")


MESSAGES: list[Message] = [
    ("answers", "d1", b"a1"),
    ("records", "account:1", b"r1"),
    ("records", "account:2", b"r2"),
    ("answers", "d2", b"a2"),
    ("records", "account:3", b"r3"),
]
IDS = [10, 11, 12, 13, 14]


def test_first_topics_are_split_off_in_order() -> None:
    assert _first_then_rest(IDS, MESSAGES, ()) == [(IDS, MESSAGES)]
    assert _first_then_rest(IDS, MESSAGES, {"answers"}) == [
        ([10, 13], [MESSAGES[0], MESSAGES[3]]),
        ([11, 12, 14], [MESSAGES[1], MESSAGES[2], MESSAGES[4]]),
    ]
    # Nothing to split off, or nothing else: one send, as before.
    assert _first_then_rest(IDS, MESSAGES, {"other"}) == [(IDS, MESSAGES)]
    only = [m for m in MESSAGES if m[0] == "answers"]
    assert _first_then_rest([10, 13], only, {"answers"}) == [([10, 13], only)]


def _relay(publisher: Any) -> OutboxRelay:
    return OutboxRelay(None, "s", publisher)  # publish_committed needs no pool


def test_answers_are_sent_and_acknowledged_before_the_records() -> None:
    pub = Recorder()
    relay = _relay(pub)
    asyncio.run(relay.publish_committed(IDS, MESSAGES, {"answers"}))
    assert [[m[2] for m in s] for s in pub.sends] == [[b"a1", b"a2"], [b"r1", b"r2", b"r3"]]
    assert sorted(relay._acked) == IDS and not relay._claimed


def test_a_failed_second_part_leaves_only_its_rows_to_the_relay() -> None:
    pub = Recorder(fail_on=2)
    relay = _relay(pub)
    asyncio.run(relay.publish_committed(IDS, MESSAGES, {"answers"}))
    assert relay._acked == [10, 13]  # the answers were acknowledged: not sent again
    assert not relay._claimed  # the records are the relay's now
    assert relay._wake.is_set()
