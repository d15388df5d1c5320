"""A consumer with a doorbell pauses its partitions at rest (no fetch at all) and a ring wakes it
at once; with no ring, the safety net still delivers; the bell keeps ringing after its listening
connection was cut; a rebalance while paused leaves no partition paused for ever. On the real
embedded PostgreSQL and broker (aiokafka's pause/resume and fetch wait, asyncpg's LISTEN)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from offsync_shared import bus, db, ops_hint
from offsync_shared.doorbell import Doorbell
from offsync_shared.rest_policy import Wake
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import ADMIN, DEAD_LETTER
from offsync_stack.testing import InfraEnv, Probe, eventually

pytestmark = pytest.mark.integration

ACTIVE_MS, IDLE_MS, SAFETY_NET_S = 5, 200, 6.0


@asynccontextmanager
async def _consumer(
    env: InfraEnv, group: str | None, bell: Doorbell, seen: list[bool]
) -> AsyncIterator[bus.ConsumerLoop]:
    async def on_probe(event: object, _env: object) -> None:
        assert isinstance(event, Probe)
        seen.append(event.flag)

    timeouts = {**env.group_timeouts, "fetch_max_wait_ms": ACTIVE_MS, "fetch_idle_wait_ms": IDLE_MS}
    loop = bus.ConsumerLoop(
        bus.ConsumerConfig(
            env.kafka_bootstrap,
            [ADMIN.full(env.topic_prefix)],
            group,
            DEAD_LETTER.full(env.topic_prefix),
            doorbell_safety_net_s=SAFETY_NET_S,
            **timeouts,
        ),
        bus.Producer(env.kafka_bootstrap),
        name="test",
        handlers={Probe.TYPE: on_probe},
        bell=bell,
    )
    await loop.start()
    running = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        await stop_tasks([running])
        await loop.stop()


@asynccontextmanager
async def _parts(env: InfraEnv) -> AsyncIterator[tuple[asyncpg.Pool, Doorbell, bus.Producer, bus.Producer]]:
    """A pool, the consumers' bell (listening), a producer that rings it and one that does not."""
    await bus.ensure_topics(env.kafka_bootstrap, env.topic_prefix, 4)
    pool = await db.create_pool(env.pg_dsn)
    bell = Doorbell(env.pg_dsn, pool)
    ringing = bus.Producer(env.kafka_bootstrap, bell=Doorbell(env.pg_dsn, pool))
    silent = bus.Producer(env.kafka_bootstrap)
    assert ringing.bell is not None
    tasks = [asyncio.create_task(bell.run()), asyncio.create_task(ringing.bell.run())]
    await ringing.start()
    await silent.start()
    try:
        yield pool, bell, ringing, silent
    finally:
        await stop_tasks(tasks)
        await ringing.stop()
        await silent.stop()
        await pool.close()


async def _paused(loop: bus.ConsumerLoop) -> bool:
    c = loop.consumer
    return bool(
        loop.rest is not None and loop.rest.paused and c is not None and c.assignment() and c.paused() == c.assignment()
    )


async def _until_paused(loop: bus.ConsumerLoop) -> None:
    await eventually(lambda: _paused(loop), timeout=30, message="the consumer paused at rest")


async def _handled(seen: list[bool], n: int) -> bool:
    return len(seen) >= n


@pytest.mark.parametrize("group", [None, "g-doorbell"], ids=["group-less", "group"])
async def test_paused_at_rest_woken_by_the_bell_and_by_the_safety_net(fresh_env: InfraEnv, group: str | None) -> None:
    topic = ADMIN.full(fresh_env.topic_prefix)
    seen: list[bool] = []
    async with _parts(fresh_env) as (_pool, bell, ringing, silent), _consumer(fresh_env, group, bell, seen) as loop:
        assert loop.rest is not None, "no rest policy: the doorbell is off"
        await eventually(lambda: _listening(bell), timeout=10, message="the bell listening")
        await _until_paused(loop)

        # Rung: handled well within the safety net (the consumer sent no fetch meanwhile).
        sent = time.monotonic()
        await ringing.send(topic, Probe(flag=True).envelope("k1"))
        await eventually(lambda: _handled(seen, 1), timeout=SAFETY_NET_S, message="the rung record")
        assert time.monotonic() - sent < SAFETY_NET_S / 2
        assert loop.wakes[Wake.BELL] >= 1

        # Not rung: the safety net looks within its interval and finds the record.
        await _until_paused(loop)
        bells = loop.wakes[Wake.BELL]
        await silent.send(topic, Probe(flag=False).envelope("k2"))
        await eventually(lambda: _handled(seen, 2), timeout=SAFETY_NET_S + 10, message="the unrung record")
        assert loop.wakes[Wake.SAFETY_NET] >= 1
        assert loop.wakes[Wake.BELL] == bells, "woken by a bell nobody rang"
        assert seen == [True, False]


async def test_the_bell_survives_a_lost_connection_and_a_rebalance_while_paused(fresh_env: InfraEnv) -> None:
    topic = ADMIN.full(fresh_env.topic_prefix)
    seen: list[bool] = []
    async with _parts(fresh_env) as (pool, bell, ringing, _silent), _consumer(fresh_env, "g-bell", bell, seen) as first:
        await eventually(lambda: _listening(bell), timeout=10, message="the bell listening")
        await _until_paused(first)

        # The listening connection is cut (as by a database restart): the bell listens again.
        killed = bell.listener_pid
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", killed)
        await eventually(lambda: _listening_again(bell, killed), timeout=15, message="the bell listening again")
        await _until_paused(first)
        sent = time.monotonic()
        await ringing.send(topic, Probe(flag=True).envelope("after-reconnect"))
        await eventually(lambda: _handled(seen, 1), timeout=SAFETY_NET_S, message="rung after the reconnect")
        assert time.monotonic() - sent < SAFETY_NET_S / 2

        # A second member joins while the first is paused: the rebalance hands the first new,
        # unpaused partitions, which wake it; both end paused with every partition, and rung
        # records on every partition are handled by one or the other without the safety net.
        await _until_paused(first)
        async with _consumer(fresh_env, "g-bell", bell, seen) as second:
            await _until_paused(second)
            await _until_paused(first)
            assert first.consumer is not None and second.consumer is not None
            assert len(first.consumer.assignment() | second.consumer.assignment()) == 4
            sent = time.monotonic()
            for i in range(16):
                await ringing.send(topic, Probe(flag=True).envelope(f"key-{i}"))
            await eventually(lambda: _handled(seen, 17), timeout=SAFETY_NET_S, message="rung records on all partitions")
            assert time.monotonic() - sent < SAFETY_NET_S / 2


async def _listening(bell: Doorbell) -> bool:
    return bell.listening


async def _listening_again(bell: Doorbell, old_pid: int | None) -> bool:
    return bell.listening and bell.listener_pid != old_pid and bell.reconnects >= 1


async def test_ops_hints_are_heard_at_the_commit_and_after_a_lost_connection(fresh_env: InfraEnv) -> None:
    """publish-service's ops hint (offsync_shared.ops_hint) reaches a listener on the bell's
    connection when the transaction that queued it commits, never from a rolled-back one, and
    again once the listening connection was cut and reopened."""
    heard: list[dict[str, int] | None] = []
    pool = await db.create_pool(fresh_env.pg_dsn)
    bell = Doorbell(fresh_env.pg_dsn, pool, reconnect_max_s=0.2)
    bell.listen(ops_hint.CHANNEL, lambda payload: heard.append(ops_hint.decode(payload)))
    running = asyncio.create_task(bell.run())
    try:
        await eventually(lambda: _listening(bell), timeout=10, message="the bell listening")
        async with pool.acquire() as conn:
            with contextlib.suppress(RuntimeError):
                async with conn.transaction():
                    await ops_hint.send(conn, {"b-lost": 1})
                    raise RuntimeError("rolled back")
            async with conn.transaction():
                await ops_hint.send(conn, {"b-1": 7, "b-2": 9})
                await ops_hint.send(conn, {f"b-{i:06}": i for i in range(1_000)})  # too large: not sent
                assert heard == [], "heard before the commit"
        await eventually(lambda: _count(heard, 1), timeout=10, message="the committed hint")
        assert heard == [{"b-1": 7, "b-2": 9}]

        listener = bell.listener_pid
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_terminate_backend($1)", listener)
        await eventually(lambda: _listening_again(bell, listener), timeout=10, message="listening again")
        async with pool.acquire() as conn:
            await ops_hint.send(conn, {"b-3": 11})  # outside a transaction: sent at once
        await eventually(lambda: _count(heard, 2), timeout=10, message="the hint after the reconnect")
        assert heard[-1] == {"b-3": 11}
    finally:
        await stop_tasks([running])
        await pool.close()


async def _count(heard: list[dict[str, int] | None], n: int) -> bool:
    return len(heard) >= n
