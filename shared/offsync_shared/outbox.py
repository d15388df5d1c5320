"""Transactional outbox: an event is written in the same transaction as the state it describes,
and a relay publishes it afterwards, so a crash between commit and publish loses nothing.

Each owning schema has its own ``outbox`` table (created by :data:`OUTBOX_DDL`). The relay wakes
on ``NOTIFY`` for low latency and also polls, so a missed notification only delays.
Delivery is at-least-once: a relay that dies after producing but before deleting re-sends;
consumers dedupe on the envelope id or on record versions.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import asyncpg

from offsync_shared import metrics
from offsync_shared.envelope import Envelope

log = logging.getLogger(__name__)

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""


class Publisher(Protocol):
    async def send_many(self, messages: list[tuple[str, str, bytes]]) -> None: ...


async def enqueue(conn: asyncpg.Connection, schema: str, topic: str, env: Envelope) -> None:
    """Add an event to ``schema``'s outbox; call inside the transaction that made the change."""
    await conn.execute(
        f'INSERT INTO "{schema}".outbox(topic, key, value) VALUES ($1, $2, $3)', topic, env.key, env.encode()
    )
    await conn.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")


async def enqueue_many(conn: asyncpg.Connection, schema: str, rows: list[tuple[str, Envelope]]) -> None:
    if not rows:
        return
    await conn.executemany(
        f'INSERT INTO "{schema}".outbox(topic, key, value) VALUES ($1, $2, $3)',
        [(topic, env.key, env.encode()) for topic, env in rows],
    )
    await conn.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")


class OutboxRelay:
    """Moves outbox rows to the bus in id order, a batch at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._listen_conn: asyncpg.Connection | None = None
        self.published = 0

    async def run(self) -> None:
        self._listen_conn = await self.pool.acquire()
        await self._listen_conn.add_listener(f"{self.schema}_outbox", self._on_notify)
        try:
            while True:
                try:
                    moved = await self.drain_once()
                except Exception as exc:  # noqa: BLE001 - a relay that dies stops every event of its service
                    # Seen on a PostgreSQL restart: asyncpg's InternalClientError while a broken
                    # connection is released; on a broker restart: KafkaError. All are retried.
                    log.warning("outbox relay error, will retry", extra={"error": f"{type(exc).__name__}: {exc}"})
                    moved = 0
                    await asyncio.sleep(self.poll_interval)  # back off from a failing dependency
                if moved >= self.batch_size:
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                except asyncio.TimeoutError:
                    pass
        finally:
            try:
                await self._listen_conn.remove_listener(f"{self.schema}_outbox", self._on_notify)
            except Exception:  # noqa: BLE001 - the connection may be gone with a restarted database
                pass
            finally:
                await self.pool.release(self._listen_conn)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def drain_once(self) -> int:
        """Publish one batch; returns how many rows moved. Rows are deleted only after the
        broker acknowledged them. One relay per schema at a time (advisory lock), so events
        leave in commit order even when several replicas of a service run."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", f"outbox:{self.schema}"):
                    return 0
                rows = await conn.fetch(
                    f'SELECT id, topic, key, value FROM "{self.schema}".outbox ORDER BY id LIMIT $1',
                    self.batch_size,
                )
                if not rows:
                    return 0
                await self.publisher.send_many([(r["topic"], r["key"], bytes(r["value"])) for r in rows])
                await conn.execute(
                    f'DELETE FROM "{self.schema}".outbox WHERE id = ANY($1::bigint[])', [r["id"] for r in rows]
                )
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)
