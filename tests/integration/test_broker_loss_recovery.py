"""A restarted embedded broker has forgotten every topic and message. The services must recover
alone: the broker watch re-creates the topics with our partition count (never the broker's
auto-created 4), the outbox relay publishes its retained window again, so events that were on
the broker but not yet consumed are not lost, and a consumer that had read far into the old
logs reads the new ones from the start (the broker answers a fetch past the new end with
nothing, so it would wait there); what was produced after the restart gets through despite the
orphan batches the broker wrote for produces to the missing topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from offsync_shared import bus, db
from offsync_shared.broker_watch import BrokerWatch
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.outbox import OUTBOX_DDL, OutboxRelay, enqueue
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.embedded import EmbeddedBroker
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration

PARTITIONS = 3  # not the broker's own default (4): a topic it auto-created would show


@pytest.mark.parametrize("rewound_by", ["watch", "consumer"], ids=["watch-rewinds", "consumer-notices-past-end"])
async def test_broker_restart_topics_recreated_and_outbox_replayed(
    fresh_env: InfraEnv, tmp_path: Path, rewound_by: str
) -> None:
    """``consumer``: the reader is not told by the watch (another service's watch may repair the
    loss before this one looks): it notices on its own that it is past the new logs' end."""
    broker = EmbeddedBroker(tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    prefix = fresh_env.topic_prefix
    topic = ADMIN.full(prefix)
    pool = await db.create_pool(fresh_env.pg_dsn)
    producer = bus.Producer(broker.bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    tasks: list[asyncio.Task[None]] = []
    seen: set[str] = set()

    async def on_settings(event: Event, env: Envelope) -> None:
        seen.add(env.id)

    loop = bus.ConsumerLoop(
        bus.ConsumerConfig(broker.bootstrap, [topic], None, DEAD_LETTER.full(prefix)),
        producer,
        name="reader",
        handlers={Probe.TYPE: on_settings},
    )
    try:
        await bus.ensure_topics(broker.bootstrap, prefix, PARTITIONS)
        await producer.start()
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA s; SET search_path TO s;" + OUTBOX_DDL)
        relay = OutboxRelay(pool, "s", producer, poll_interval=0.2, retention_s=60)
        watch = BrokerWatch(broker.bootstrap, prefix, PARTITIONS, interval=0.2)
        watch.on_lost(relay.replay)
        if rewound_by == "watch":
            watch.on_lost(loop.rewind)
        await loop.start()
        tasks += [asyncio.create_task(relay.run()), asyncio.create_task(watch.run()), asyncio.create_task(loop.run())]

        # Far more on the old logs than will be on the new ones soon after the restart.
        direct = [Probe(flag=True).envelope(f"direct-{i}") for i in range(300)]
        await producer.send_many([(topic, e.key, e.encode()) for e in direct])
        before = [await _event(pool, topic, i) for i in range(20)]
        await eventually(lambda: _pending_is(pool, 0), timeout=30, message="first events relayed")
        await eventually(lambda: _all_in(seen, [e.id for e in direct] + before), timeout=30, message="old logs read")
        await eventually(lambda: _has_looked(watch, topic), timeout=30, message="the watch saw the logs once")
        assert set(await _ids_on(broker.bootstrap, topic)) >= set(before)

        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)  # same port, nothing remembered
        after = [await _event(pool, topic, i) for i in range(20, 25)]

        await eventually(
            lambda: _all_on(broker.bootstrap, topic, before + after),
            timeout=60,
            interval=0.5,
            message="every event on the restarted broker",
        )
        await eventually(lambda: _all_in(seen, after), timeout=30, message="the reader got what came after the restart")
        assert watch.losses >= 1 and relay.replayed >= 20
        assert len(await _partitions(broker.bootstrap, topic)) == PARTITIONS
    finally:
        await stop_tasks(tasks)  # cancels again until they end: a lost cancellation hung a plain await
        await loop.stop()
        await producer.stop()
        await pool.close()
        await asyncio.to_thread(broker.stop)


async def _event(pool: object, topic: str, i: int) -> str:
    env: Envelope = Probe(flag=bool(i % 2)).envelope(f"org-{i}")
    async with pool.acquire() as conn:  # type: ignore[attr-defined]
        async with conn.transaction():
            await enqueue(conn, "s", topic, env)
    return env.id


async def _all_in(seen: set[str], ids: list[str]) -> bool:
    return set(ids) <= seen


async def _pending_is(pool: object, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM s.outbox WHERE published_at IS NULL") == n  # type: ignore[attr-defined]


async def _has_looked(watch: BrokerWatch, topic: str) -> bool:
    # The ends it read show the old logs (it reads them every few checks, and a read from before
    # the first sends would show nothing to shrink from).
    return sum(end for tp, end in watch.ends.items() if tp.topic == topic) > 0


async def _checks_and_sees(watch: BrokerWatch, topic: str) -> bool:
    assert not await watch.check()
    return await _has_looked(watch, topic)  # Tansu's listed ends may lag the sends for a moment


async def _partitions(bootstrap: str, topic: str) -> set[int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await c.start()
    try:
        await c.topics()
        return set(c.partitions_for_topic(topic) or ())
    finally:
        await c.stop()


async def _ids_on(bootstrap: str, topic: str) -> list[str]:
    """Every envelope id the topic holds, read from the start."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await c.start()
    try:
        await c.topics()
        tps = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or ()]
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        ids: list[str] = []
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            for tp, recs in (await c.getmany(timeout_ms=500)).items():
                ids += [Envelope.decode(r.value).id for r in recs if r.value]
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return ids
    finally:
        await c.stop()


async def _all_on(bootstrap: str, topic: str, ids: list[str]) -> bool:
    try:
        return set(ids) <= set(await _ids_on(bootstrap, topic))
    except Exception:  # noqa: BLE001 - the broker is still coming back
        return False


async def test_a_loss_another_process_repaired_is_noticed_from_the_ends_within_ends_every_checks(
    fresh_env: InfraEnv, tmp_path: Path
) -> None:
    """The topics are back (another service's watch or producer re-created them) before this
    watch looks again, so only the shrunk ends tell the loss. They are read every ``ends_every``
    checks, so it notices within that many."""
    broker = EmbeddedBroker(tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    prefix = fresh_env.topic_prefix
    topic = ADMIN.full(prefix)
    producer = bus.Producer(broker.bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    watch = BrokerWatch(broker.bootstrap, prefix, PARTITIONS, ends_every=3)
    try:
        await bus.ensure_topics(broker.bootstrap, prefix, PARTITIONS)
        await producer.start()
        await producer.send_many([(topic, f"k{i}", Probe(flag=True).envelope(f"k{i}").encode()) for i in range(30)])
        await eventually(lambda: _checks_and_sees(watch, topic), timeout=30, message="the watch read the old ends")
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)  # same port, nothing remembered
        await bus.ensure_topics(broker.bootstrap, prefix, PARTITIONS)  # someone else repaired it first
        for _ in range(watch.ends_every):
            if await watch.check():
                break
        else:
            pytest.fail(f"the loss was not noticed in {watch.ends_every} checks")
    finally:
        await watch._close()
        await producer.stop()
        await asyncio.to_thread(broker.stop)
