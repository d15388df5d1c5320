"""A consumer whose topics the broker does not know yet waits for them instead of failing its
start. On a cluster a topic just created through one broker reaches the others' metadata a
moment later, and aiokafka's group-less consumer (the device gateway's) raised
UnknownTopicOrPartitionError from ``start()`` when it asked one of those: sync-service exited at
start-up (seen in the Kafka tier). That race cannot be staged at will; a topic that does not exist
yet takes the same path (aiokafka's own wait for it ends, lowered here to a second, with the same
error). A group's consumer takes the same path, but its join needs requests held longer than
the second this test's consumer allows."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from offsync_shared import bus
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration


def _loop(env: InfraEnv, producer: bus.Producer, seen: list[bool], **kw: Any) -> bus.ConsumerLoop:
    async def on_probe(event: Event, _env: Envelope) -> None:
        assert isinstance(event, Probe)
        seen.append(event.flag)

    return bus.ConsumerLoop(
        bus.ConsumerConfig(
            env.kafka_bootstrap,
            [ADMIN.full(env.topic_prefix)],
            None,  # group-less, as the device gateway's
            DEAD_LETTER.full(env.topic_prefix),
            **env.group_timeouts,
            **kw,
        ),
        producer,
        name="topic-wait",
        handlers={Probe.TYPE: on_probe},
    )


async def test_a_group_less_consumer_started_before_its_topic_exists_waits_for_it_and_reads_it(
    fresh_env: InfraEnv,
) -> None:
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    seen: list[bool] = []
    loop = _loop(fresh_env, producer, seen, request_timeout_ms=1000)
    starting = asyncio.create_task(loop.start())
    running: asyncio.Task[None] | None = None
    try:
        await eventually(lambda: _true(loop.topic_waits > 0), timeout=20, message="the start found the topic missing")
        assert not starting.done()
        await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4, topics=[ADMIN, DEAD_LETTER])
        await asyncio.wait_for(starting, 30)
        running = asyncio.create_task(loop.run())
        await eventually(lambda: _true(loop.caught_up.is_set()), timeout=30, message="the consumer positioned")
        await producer.send(ADMIN.full(fresh_env.topic_prefix), Probe(flag=True).envelope("default"))
        await eventually(lambda: _true(seen == [True]), timeout=30, message="the event read")
    finally:
        for task in (starting, running):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await loop.stop()
        await producer.stop()


async def test_a_topic_that_never_comes_fails_the_start_with_a_clear_error(fresh_env: InfraEnv) -> None:
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    loop = _loop(fresh_env, producer, [], topics_wait_s=0.5, request_timeout_ms=1000)
    try:
        with pytest.raises(bus.TopicsMissing, match=ADMIN.full(fresh_env.topic_prefix)):
            await asyncio.wait_for(loop.start(), 30)
        assert loop.topic_waits >= 1
    finally:
        await loop.stop()
        await producer.stop()


async def _true(value: bool) -> bool:
    return value
