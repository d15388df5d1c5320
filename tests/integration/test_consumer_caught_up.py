"""A consumer reports "caught up" once it has read to the end the broker reported, even when the
topic never goes quiet: under a steady flow no poll is empty, and a service whose readiness
waits for an empty poll (sync-service's `consumer_positioned`) would never become ready again
after a restart under load (found by the chaos suite)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from offsync_shared import bus
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("group", [None, "g-caught-up"], ids=["group-less", "group"])
async def test_caught_up_under_a_steady_flow(fresh_env: InfraEnv, group: str | None) -> None:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    topic = ADMIN.full(fresh_env.topic_prefix)
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    stop = asyncio.Event()

    async def flow() -> None:  # a message every few ms: a poll of 500 ms always finds something
        while not stop.is_set():
            await producer.send(topic, Probe(flag=True).envelope("default"))
            await asyncio.sleep(0.005)  # the flow's pace

    seen: list[int] = []

    async def on_settings(event: object, env: object) -> None:
        seen.append(1)

    flowing = asyncio.create_task(flow())
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
        handlers={Probe.TYPE: on_settings},
    )
    try:
        await loop.start()
        running = asyncio.create_task(loop.run())
        await eventually(lambda: _is_set(loop.caught_up), timeout=20, message="caught up while messages keep arriving")
        assert not flowing.done()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        stop.set()
        await flowing
        await loop.stop()
        await producer.stop()


async def _len_at_least(xs: list[int], n: int) -> bool:
    return len(xs) >= n


async def _is_set(ev: asyncio.Event) -> bool:
    return ev.is_set()
