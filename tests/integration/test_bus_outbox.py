"""The event backbone over a real PostgreSQL and a real Kafka-protocol broker: the outbox relay
publishes what committed, in order; the consumer loop dispatches and dead-letters junk."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from offsync_shared import bus, db
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.outbox import OUTBOX_DDL, OutboxRelay, enqueue
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration


async def test_outbox_relay_publishes_committed_events_in_order_and_consumer_dispatches(fresh_env: InfraEnv) -> None:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    pool = await db.create_pool(fresh_env.pg_dsn)
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    admin_topic = ADMIN.full(fresh_env.topic_prefix)
    received: list[bool] = []

    async def on_settings(event: Event, env: Envelope) -> None:
        assert isinstance(event, Probe)
        received.append(event.flag)

    loop = bus.ConsumerLoop(
        bus.ConsumerConfig(
            fresh_env.kafka_bootstrap,
            [admin_topic],
            "g-test",
            DEAD_LETTER.full(fresh_env.topic_prefix),
            **fresh_env.group_timeouts,
        ),
        producer,
        name="test",
        handlers={Probe.TYPE: on_settings},
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA s; SET search_path TO s;" + OUTBOX_DDL)
            for flag in (True, False, True):
                async with conn.transaction():
                    await enqueue(conn, "s", admin_topic, Probe(flag=flag).envelope("default"))
            # A rolled-back transaction's event never leaves.
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await enqueue(conn, "s", admin_topic, Probe(flag=False).envelope("default"))
                    raise RuntimeError("abort")
        relay = OutboxRelay(pool, "s", producer)
        assert await relay.drain_once() == 3
        assert await relay.drain_once() == 0
        await loop.start()
        task = asyncio.create_task(loop.run())
        await eventually(lambda: _len_at_least(received, 3), message="3 events consumed")
        assert received == [True, False, True]
        task.cancel()
    finally:
        await loop.stop()
        await producer.stop()
        await pool.close()


async def _len_at_least(xs: list[bool], n: int) -> bool:
    return len(xs) >= n


async def test_junk_goes_to_dead_letter_and_consumer_keeps_going(fresh_env: InfraEnv) -> None:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    admin_topic = ADMIN.full(fresh_env.topic_prefix)
    dl_topic = DEAD_LETTER.full(fresh_env.topic_prefix)
    raw = AIOKafkaProducer(bootstrap_servers=fresh_env.kafka_bootstrap)
    await raw.start()
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    got: list[Probe] = []

    async def on_settings(event: Event, env: Envelope) -> None:
        got.append(event)  # type: ignore[arg-type]

    loop = bus.ConsumerLoop(
        bus.ConsumerConfig(fresh_env.kafka_bootstrap, [admin_topic], "g-dl", dl_topic, **fresh_env.group_timeouts),
        producer,
        name="test",
        handlers={Probe.TYPE: on_settings},
    )
    bus.ConsumerLoop(
        bus.ConsumerConfig(fresh_env.kafka_bootstrap, [dl_topic], "g-dl-reader", dl_topic, **fresh_env.group_timeouts),
        producer,
        name="dl",
    )
    parked: list[Envelope] = []

    async def collect(batch: list[tuple[Event, Envelope]]) -> None:
        raise AssertionError("dead letters are not registered events")

    try:
        for junk in (b"not json", b"[1,2]", b'{"id":"x"}', Envelope("nope.unknown", "k", {}).encode()):
            await raw.send_and_wait(admin_topic, key=b"default", value=junk)
        await raw.send_and_wait(admin_topic, key=b"default", value=Probe(flag=True).envelope("default").encode())
        await loop.start()
        task = asyncio.create_task(loop.run())

        async def one_good() -> bool:
            return len(got) == 1

        await eventually(one_good, message="good event after junk")
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(
            dl_topic, bootstrap_servers=fresh_env.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await c.start()
        try:

            async def four_parked() -> bool:
                for msgs in (await c.getmany(timeout_ms=200)).values():
                    parked.extend(Envelope.decode(m.value) for m in msgs)
                return len(parked) >= 4

            await eventually(four_parked, message="4 dead letters")
        finally:
            await c.stop()
        assert all(p.type == "dead_letter" for p in parked)
        task.cancel()
    finally:
        await loop.stop()
        await producer.stop()
        await raw.stop()
