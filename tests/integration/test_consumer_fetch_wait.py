"""A consumer with an idle fetch wait stretches it at rest and snaps back to the short wait when a
record arrives, and the record still gets through; on the real broker and aiokafka (the wait is
set on aiokafka's fetcher, which has no public setter: this fails if a new release moves it)."""

from __future__ import annotations

import asyncio

import pytest

from offsync_shared import bus
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration

ACTIVE_MS, IDLE_MS = 5, 200


@pytest.mark.parametrize("group", [None, "g-fetch-wait"], ids=["group-less", "group"])
async def test_wait_stretches_at_rest_and_snaps_back_on_a_record(fresh_env: InfraEnv, group: str | None) -> None:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    topic = ADMIN.full(fresh_env.topic_prefix)
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    seen: list[object] = []

    async def on_probe(event: object, env: object) -> None:
        seen.append(event)

    timeouts = {**fresh_env.group_timeouts, "fetch_max_wait_ms": ACTIVE_MS, "fetch_idle_wait_ms": IDLE_MS}
    loop = bus.ConsumerLoop(
        bus.ConsumerConfig(
            fresh_env.kafka_bootstrap, [topic], group, DEAD_LETTER.full(fresh_env.topic_prefix), **timeouts
        ),
        producer,
        name="test",
        handlers={Probe.TYPE: on_probe},
    )
    running = None
    try:
        await loop.start()
        assert loop.fetch_wait is not None, "aiokafka's fetcher not found: the adaptive wait is off"
        running = asyncio.create_task(loop.run())
        await eventually(lambda: _fetch_wait_is(loop, IDLE_MS), timeout=20, message="the idle wait at rest")
        await producer.send(topic, Probe(flag=True).envelope("k"))
        await eventually(lambda: _has(seen), timeout=20, message="the record after the quiet spell")
        assert loop.fetch_wait.current_ms == ACTIVE_MS
        assert loop.consumer._fetcher._fetch_max_wait_ms == ACTIVE_MS  # type: ignore[union-attr]  # noqa: SLF001
    finally:
        if running is not None:
            # stop_tasks cancels again until the task ends: on Python 3.11 one cancellation can be
            # lost inside the loop's asyncio.wait_for (seen here as a teardown hanging for minutes).
            await stop_tasks([running])
        await loop.stop()
        await producer.stop()


async def _fetch_wait_is(loop: bus.ConsumerLoop, ms: int) -> bool:
    fetcher = getattr(loop.consumer, "_fetcher", None)
    return getattr(fetcher, "_fetch_max_wait_ms", None) == ms


async def _has(xs: list[object]) -> bool:
    return bool(xs)
