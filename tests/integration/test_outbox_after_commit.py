"""The outbox's fast path over a real PostgreSQL and broker: a writer inside
``publish_after_commit`` sends its committed events itself; the relay sends none of them again,
deletes them once acknowledged, and takes over whatever the writer could not send."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from offsync_shared import bus, db
from offsync_shared.envelope import Envelope
from offsync_shared.outbox import OUTBOX_DDL, Message, OutboxRelay, enqueue, publish_after_commit
from offsync_shared.topics import ADMIN
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration


class FailsOnce:
    """A publisher whose first send fails like a broker that is away, then works."""

    def __init__(self, inner: bus.Producer) -> None:
        self.inner = inner
        self.failed = False

    async def send_many(self, messages: list[Message]) -> None:
        if not self.failed:
            self.failed = True
            raise KafkaError("broker away")
        await self.inner.send_many(messages)


async def _setup(env: InfraEnv) -> tuple[asyncpg.Pool, bus.Producer, str]:
    await bus.ensure_topics(env.kafka_bootstrap, env.topic_prefix, 4)
    pool = await db.create_pool(env.pg_dsn)
    async with pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA s; SET search_path TO s;" + OUTBOX_DDL)
    producer = bus.Producer(env.kafka_bootstrap)
    await producer.start()
    return pool, producer, ADMIN.full(env.topic_prefix)


async def _write(pool: asyncpg.Pool, relay: OutboxRelay, topic: str, flag: bool) -> None:
    async with publish_after_commit(relay), pool.acquire() as conn:
        async with conn.transaction():
            await enqueue(conn, "s", topic, Probe(flag=flag).envelope("default"))


async def _read_all(bootstrap: str, topic: str, n: int) -> list[bool]:
    got: list[bool] = []
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await c.start()
    try:

        async def enough() -> bool:
            for msgs in (await c.getmany(timeout_ms=200)).values():
                got.extend(Envelope.decode(m.value).payload["flag"] for m in msgs)
            return len(got) >= n

        await eventually(enough, message=f"{n} events on the topic")
        for msgs in (await c.getmany(timeout_ms=300)).values():  # anything beyond n is a duplicate
            got.extend(Envelope.decode(m.value).payload["flag"] for m in msgs)
    finally:
        await c.stop()
    return got


async def _outbox_rows(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM s.outbox"))


async def test_writer_sends_after_commit_and_relay_only_cleans_up(fresh_env: InfraEnv) -> None:
    pool, producer, topic = await _setup(fresh_env)
    try:
        relay = OutboxRelay(pool, "s", producer)
        await _write(pool, relay, topic, True)
        await _write(pool, relay, topic, False)
        with pytest.raises(RuntimeError):  # rolled back: neither sent nor stored
            async with publish_after_commit(relay), pool.acquire() as conn:
                async with conn.transaction():
                    await enqueue(conn, "s", topic, Probe(flag=True).envelope("default"))
                    raise RuntimeError("abort")
        # Sent without the relay running; still in the outbox until the relay's next pass.
        assert await _read_all(fresh_env.kafka_bootstrap, topic, 2) == [True, False]
        assert await _outbox_rows(pool) == 2
        assert await relay.drain_once() == 0  # nothing sent twice
        assert await _outbox_rows(pool) == 0
        assert relay.published == 2
    finally:
        await producer.stop()
        await pool.close()


async def test_relay_sends_what_the_writer_could_not(fresh_env: InfraEnv) -> None:
    pool, producer, topic = await _setup(fresh_env)
    try:
        relay = OutboxRelay(pool, "s", FailsOnce(producer))
        await _write(pool, relay, topic, True)  # the direct send fails: no exception for the writer
        assert await _outbox_rows(pool) == 1
        assert await relay.drain_once() == 1
        assert await _read_all(fresh_env.kafka_bootstrap, topic, 1) == [True]
        assert await _outbox_rows(pool) == 0
    finally:
        await producer.stop()
        await pool.close()


async def test_the_relay_listens_again_after_its_connection_is_lost(fresh_env: InfraEnv) -> None:
    """A database restart cuts the relay's LISTEN connection. It listens on a new one at once,
    and a row whose NOTIFY came while nobody listened is sent then, not at the next poll (60 s
    here; 5 s idle in the services)."""
    pool, producer, topic = await _setup(fresh_env)
    relay = OutboxRelay(pool, "s", producer, poll_interval=60.0, idle_poll_interval=60.0)
    task = asyncio.create_task(relay.run())

    async def write(flag: bool) -> None:  # a writer outside publish_after_commit: row + NOTIFY
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, "s", topic, Probe(flag=flag).envelope("default"))

    async def published(n: int) -> bool:
        return relay.published >= n

    async def listening() -> int | None:  # the backend whose last statement was the relay's LISTEN
        return await pool.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %s_outbox%' AND state = 'idle'"
        )

    try:
        first = await eventually(listening, message="the relay listening")
        await write(True)
        await eventually(lambda: published(1), message="the notified row sent")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", first)
        await write(False)  # its NOTIFY may reach nobody: the relay is not listening yet
        await eventually(lambda: published(2), message="the row sent once the relay listens again")
        assert await listening() not in (None, first) and relay.listener_pid == await listening()
        assert await _read_all(fresh_env.kafka_bootstrap, topic, 2) == [True, False]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await pool.close()
