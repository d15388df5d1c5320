"""A consumer that keeps up with a trickle of batches never believes it is past the end of a re-created
log. The embedded broker's ListOffsets answer lags the high watermark its fetches report, so
"my position is beyond the listed end" was true every few seconds on a fresh stack and the
consumer re-read whole topics, for ever (``record.changed`` handled 2.37 M times for ~40 k records
produced). Each message must be handled once: nothing here loses a log."""

from __future__ import annotations

import asyncio
import time

import pytest

from offsync_shared import bus
from offsync_shared.events.admin import BusinessUnitChanged
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration

FLOW_S = 3.0  # a trickle of batches, then the consumer at rest checks whether it is past the end


@pytest.mark.parametrize("group", [None, "g-no-rewind"], ids=["group-less", "group"])
async def test_a_trickle_is_read_once(fresh_env: InfraEnv, group: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "PAST_END_CHECK_S", 0.2)  # look often: the race shows within seconds
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 2)
    topic = ADMIN.full(fresh_env.topic_prefix)
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    seen: dict[str, int] = {}
    sent: list[str] = []

    async def on_settings(event: object, env: object) -> None:
        seen[env.id] = seen.get(env.id, 0) + 1  # type: ignore[attr-defined]

    loop = bus.ConsumerLoop(
        bus.ConsumerConfig(
            fresh_env.kafka_bootstrap,
            [topic],
            group,
            DEAD_LETTER.full(fresh_env.topic_prefix),
            auto_offset_reset="earliest",
            **fresh_env.group_timeouts,
        ),
        producer,
        name="test",
        handlers={BusinessUnitChanged.TYPE: on_settings},
    )
    rewinds: list[list[str]] = []
    checks = [0]
    check = loop.rewind_if_past_end

    async def counted() -> list[str]:
        checks[0] += 1
        past = await check()
        if past:
            rewinds.append(past)
        return past

    loop.rewind_if_past_end = counted  # type: ignore[method-assign]
    running: asyncio.Task[None] | None = None
    try:
        await loop.start()
        running = asyncio.create_task(loop.run())
        await eventually(lambda: _is_set(loop.caught_up), timeout=30, message="consumer positioned")
        end = time.monotonic() + FLOW_S
        while time.monotonic() < end:
            # Several records in one produce request: after such a batch the embedded broker's
            # ListOffsets names an end short of the one its fetches report.
            envs = [BusinessUnitChanged(id="bu", parent_id=None).envelope("bu") for _ in range(3)]
            await producer.send_many([(topic, e.key, e.encode()) for e in envs])
            sent.extend(e.id for e in envs)
            await asyncio.sleep(0.3)  # the trickle's pace: the consumer is idle between batches
        await eventually(lambda: _all_seen(seen, sent), timeout=30, message="every message handled")
        looked = checks[0]
        await eventually(lambda: _above(checks, looked + 5), timeout=30, message="five more checks at rest")
        twice = {k: v for k, v in seen.items() if v > 1}
        assert not rewinds, f"false 'past the end' detections: {rewinds[:5]}"
        assert not twice, f"{len(twice)} of {len(sent)} messages handled more than once"
    finally:
        if running is not None:
            # stop_tasks cancels again until the task ends: on Python 3.11 one cancellation can be
            # lost inside the loop's asyncio.wait_for (seen here as a teardown hanging for minutes).
            await stop_tasks([running])
        await loop.stop()
        await producer.stop()


async def _is_set(e: asyncio.Event) -> bool:
    return e.is_set()


async def _above(counter: list[int], n: int) -> bool:
    return counter[0] >= n


async def _all_seen(seen: dict[str, int], sent: list[str]) -> bool:
    return all(i in seen for i in sent)
