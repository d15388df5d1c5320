"""The pieces every service opens at start and closes at stop, in order: Postgres pool (and its
migrations), Kafka topics and producer, the outbox relay, and background tasks.

Nothing connects at import time; :func:`open_runtime` is entered from a service's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from offsync_shared import bus, db, heap
from offsync_shared.broker_watch import BrokerWatch
from offsync_shared.doorbell import Doorbell
from offsync_shared.outbox import OutboxRelay
from offsync_shared.settings import CommonSettings
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import Topic

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: CommonSettings
    pool: asyncpg.Pool
    producer: bus.Producer
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    relay: OutboxRelay | None = None
    watch: BrokerWatch | None = None
    # Rung by the producer after each acknowledged send; consumers paused at rest listen to it
    # (embedded broker only: settings.kafka_doorbell).
    bell: Doorbell | None = None

    def topic(self, t: Topic) -> str:
        return t.full(self.settings.topic_prefix)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(_supervised(coro, name), name=name)
        self.tasks.append(task)
        return task

    async def ready(self) -> dict[str, bool]:
        checks = {"postgres": False, "broker": True}
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
            checks["postgres"] = True
        except Exception:  # readiness reports, it never raises
            pass
        try:
            client = self.producer._producer.client  # noqa: SLF001 - aiokafka exposes no public probe
            checks["broker"] = bool(await asyncio.wait_for(client.ready(client.get_random_node()), 2))
        except Exception:
            checks["broker"] = False
        checks["workers"] = all(not t.done() for t in self.tasks)
        return checks


async def _supervised(coro: Coroutine[Any, Any, Any], name: str) -> Any:
    try:
        return await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task died", extra={"task": name})
        raise


@contextlib.asynccontextmanager
async def open_runtime(
    settings: CommonSettings,
    *,
    schema: str | None = None,
    migrations: str | None = None,
    relay: bool = True,
    name: str | None = None,
) -> AsyncIterator[Runtime]:
    """``name``: the service's, given to its database connections (``application_name``)."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await db.create_pool(
            settings.pg_dsn, min_size=settings.pg_pool_min, max_size=settings.pg_pool_max, name=name
        )
        stack.push_async_callback(_close_pool, pool)
        if schema and migrations:
            await db.migrate(pool, schema, migrations)
        await bus.ensure_topics(
            settings.kafka_bootstrap,
            settings.topic_prefix,
            settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            check_existing=True,
        )
        bell = (
            Doorbell(settings.pg_dsn, pool, name=f"{name} listener" if name else None)
            if settings.kafka_doorbell
            else None
        )
        producer = bus.Producer(
            settings.kafka_bootstrap,
            topic_prefix=settings.topic_prefix,
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            bell=bell,
        )
        await producer.start()
        stack.push_async_callback(producer.stop)
        rt = Runtime(settings=settings, pool=pool, producer=producer, bell=bell)
        stack.push_async_callback(_cancel_all, rt)
        if bell is not None:
            rt.spawn(bell.run(), "doorbell")
        if relay and schema:
            rt.relay = OutboxRelay(pool, schema, producer, retention_s=settings.outbox_retention_s)
            rt.spawn(rt.relay.run(), f"outbox-relay:{schema}")
        # A broker that lost its state (the embedded one on restart) gets its topics back and the
        # relay's retained window again; services add their own listeners (sync-service's gateway).
        rt.watch = BrokerWatch(
            settings.kafka_bootstrap,
            settings.topic_prefix,
            settings.topic_partitions,
            interval=settings.broker_watch_interval_s,
            replication_factor=settings.topic_replication_factor,
        )
        if rt.relay is not None:
            rt.watch.on_lost(rt.relay.replay)
        rt.spawn(rt.watch.run(), "broker-watch")
        heap.freeze_long_lived()  # what start-up built lives as long as the process
        yield rt


async def _close_pool(pool: asyncpg.Pool, timeout: float = 10.0) -> None:
    """Close gracefully, but never wait for ever on a connection something failed to release."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning("pool did not close in time; terminating its connections")
        pool.terminate()


async def _cancel_all(rt: Runtime) -> None:
    await stop_tasks(rt.tasks)
