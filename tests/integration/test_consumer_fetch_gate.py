"""A consumer with a doorbell, while records flow, fetches a rung record at once instead of after
its wait: the wait is held on our side (offsync_shared.fetch_gate) and the ring ends it. On the
real embedded PostgreSQL (LISTEN/NOTIFY) and broker with aiokafka's fetcher (the gate wraps its
per-fetch coroutine: this fails if a new release moves it)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import pytest

from offsync_shared import bus, db
from offsync_shared.doorbell import Doorbell
from offsync_shared.fetch_gate import BROKER_WAIT_MS
from offsync_shared.rest_policy import Wake
from offsync_shared.runtime import stop_tasks
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration

# A hold far longer than any delivery asserted below: only a ring can explain a fast one.
HOLD_MS, IDLE_MS, SAFETY_NET_S = 4000, 8000, 30.0
CHANGES = 12


@pytest.mark.parametrize("group", [None, "g-fetch-gate"], ids=["group-less", "group"])
async def test_a_rung_record_is_fetched_before_the_hold_runs_out(fresh_env: InfraEnv, group: str | None) -> None:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    topic = ADMIN.full(fresh_env.topic_prefix)
    handled: list[float] = []

    async def on_probe(event: object, _env: object) -> None:
        handled.append(time.monotonic())

    async with AsyncExitStack() as stack:
        pool = await db.create_pool(fresh_env.pg_dsn)
        stack.push_async_callback(pool.close)
        bell, producer_bell = Doorbell(fresh_env.pg_dsn, pool), Doorbell(fresh_env.pg_dsn, pool)
        producer = bus.Producer(fresh_env.kafka_bootstrap, bell=producer_bell)
        await producer.start()
        stack.push_async_callback(producer.stop)
        timeouts = {**fresh_env.group_timeouts, "fetch_max_wait_ms": HOLD_MS, "fetch_idle_wait_ms": IDLE_MS}
        loop = bus.ConsumerLoop(
            bus.ConsumerConfig(
                fresh_env.kafka_bootstrap,
                [topic],
                group,
                DEAD_LETTER.full(fresh_env.topic_prefix),
                doorbell_safety_net_s=SAFETY_NET_S,
                **timeouts,
            ),
            producer,
            name="test",
            handlers={Probe.TYPE: on_probe},
            bell=bell,
        )
        await loop.start()
        stack.push_async_callback(loop.stop)
        tasks = [asyncio.create_task(t) for t in (bell.run(), producer_bell.run(), loop.run())]
        stack.push_async_callback(stop_tasks, tasks)

        assert loop.gate is not None, "aiokafka's per-fetch coroutine not found: the fetch gate is off"
        assert loop.consumer is not None
        assert loop.consumer._fetcher._fetch_max_wait_ms == BROKER_WAIT_MS  # type: ignore[attr-defined]  # noqa: SLF001
        await eventually(lambda: _listening(bell), timeout=10, message="the bell listening")
        await eventually(lambda: _caught_up(loop), timeout=30, message="the consumer caught up")

        # A first change wakes the consumer if it paused at rest meanwhile. Each next one is sent
        # once the previous one was handled, so the consumer stays within its hot window (it never
        # pauses): each is fetched after its ring ended a hold.
        await producer.send(topic, Probe(flag=True).envelope("warm-up"))
        await eventually(lambda: _handled(handled, 1), timeout=SAFETY_NET_S, message="the first change")
        handled.clear()
        bell_wakes = loop.wakes[Wake.BELL]
        took = []
        for i in range(CHANGES):
            sent = time.monotonic()
            await producer.send(topic, Probe(flag=True).envelope(f"k{i}"))
            await eventually(lambda n=i + 1: _handled(handled, n), timeout=HOLD_MS / 1000 + 10, message=f"change {i}")
            took.append(handled[i] - sent)
        assert max(took) < HOLD_MS / 1000 / 4, f"a rung record waited for the hold: {took}"
        assert loop.gate.cut_short >= CHANGES // 2, "the records were not fetched on their rings"
        assert loop.wakes[Wake.BELL] == bell_wakes, "the consumer paused between changes: this tested the pause"


async def _listening(bell: Doorbell) -> bool:
    return bell.listening


async def _caught_up(loop: bus.ConsumerLoop) -> bool:
    return loop.caught_up.is_set()


async def _handled(handled: list[float], n: int) -> bool:
    return len(handled) >= n
