"""Transactional outbox: an event is written in the same transaction as the state it describes,
and a relay publishes it afterwards, so a crash between commit and publish loses nothing.

Each owning schema has its own ``outbox`` table (created by :data:`OUTBOX_DDL`). The relay wakes
on ``NOTIFY`` for low latency and also polls (each second while it has work, every few seconds
at rest), so a missed notification only delays.
Delivery is at-least-once: a relay that dies after producing but before marking re-sends;
consumers dedupe on the envelope id or on record versions.

A published row is kept for ``retention_s`` (``published_at`` set, pruned afterwards): a broker
that loses its state (the embedded one forgets every message on restart) loses the events not yet
consumed, so on that signal :meth:`OutboxRelay.replay` publishes the retained window again.
With ``retention_s=0`` a published row is deleted at once.

Latency-critical writers wrap their transaction in :func:`publish_after_commit`: the rows they
enqueue are sent by the writer itself right after the commit (no NOTIFY, no relay round trips),
and the relay marks them published once acknowledged. They stay pending until then, so a failed
or interrupted send only falls back to the relay's next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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

ALTER TABLE outbox ADD COLUMN IF NOT EXISTS published_at timestamptz;
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
"""

PENDING = "published_at IS NULL"
MEASURE_EVERY_S = 5.0


class Publisher(Protocol):
    async def send_many(self, messages: list[tuple[str, str, bytes]]) -> None: ...


Message = tuple[str, str, bytes]  # topic, key, encoded envelope
Notice = tuple[str, str | None]  # a NOTIFY channel and its payload (None: nothing to send)


@dataclass(frozen=True, slots=True)
class Also:
    """A data-modifying statement for :func:`insert_rows` to run in its own: its SQL given the
    number of its first parameter, and its parameters. With ``returns`` the statement has a
    one-column ``RETURNING`` whose values come back in ``Inserted.returned`` (in no promised
    order: key them by what they hold)."""

    sql: Callable[[int], str]
    args: Sequence[object]
    returns: bool = False


_PARAM = re.compile(r"\$(\d+)")


def renumbered(sql: str, first: int) -> str:
    """``sql``, written with its parameters numbered from ``$1``, numbered from ``first``: to
    run it inside another statement, after that one's parameters."""
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + first - 1}", sql)


def statement(sql: str, args: Sequence[object], *, returns: bool = False) -> Also:
    """An :class:`Also` from SQL whose parameters are numbered from ``$1`` (renumbered to follow
    the statement it joins)."""
    return Also(lambda first: renumbered(sql, first), args, returns)


@dataclass(frozen=True, slots=True)
class Inserted:
    now: datetime  # the transaction's now(): every row it wrote with a default now() has it
    returned: list[list[object]]  # per ``Also`` with ``returns``, in order: its RETURNING values


@dataclass
class _AfterCommit:
    relay: OutboxRelay
    first_topics: frozenset[str] = frozenset()
    ids: list[int] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


_AFTER_COMMIT: contextvars.ContextVar[_AfterCommit | None] = contextvars.ContextVar("outbox_after_commit", default=None)


@contextlib.asynccontextmanager
async def publish_after_commit(relay: OutboxRelay | None, first_topics: Iterable[str] = ()) -> AsyncIterator[None]:
    """Wrap a transaction (``async with conn.transaction()`` inside): what it enqueues in the
    relay's schema is published as soon as the block ends normally, i.e. after the commit. On an
    exception nothing is sent (a rolled-back row does not exist; a committed one is the relay's).
    Messages for ``first_topics`` are sent (and acknowledged) before the others: a device's
    batch answer then does not wait for the broker to take every record event of its poll."""
    if relay is None:
        yield
        return
    pending = _AfterCommit(relay, frozenset(first_topics))
    token = _AFTER_COMMIT.set(pending)
    try:
        yield
    finally:
        _AFTER_COMMIT.reset(token)
    if pending.ids:
        await relay.publish_committed(pending.ids, pending.messages, pending.first_topics)


async def insert_rows(
    conn: asyncpg.Connection,
    schema: str,
    messages: list[Message],
    notices: Iterable[Notice] = (),
    also: Sequence[Also] = (),
    *,
    always: bool = False,
) -> Inserted | None:
    """Add events to ``schema``'s outbox in one statement; call inside the transaction that made
    the change. Inside :func:`publish_after_commit` the writer sends them itself, so no NOTIFY for
    the relay. ``notices`` ((channel, payload) pairs, the hints) are queued by the same statement,
    and the ``also`` statements run in it: on a change's path every round trip counts
    (docs/performance.md, the change path). With nothing to do no statement runs (None), unless
    ``always``: a caller that needs the transaction's ``now()`` gets it here, not in a round trip
    of its own."""
    pending = _AFTER_COMMIT.get()
    direct = pending is not None and pending.relay.schema == schema
    notes = [n for n in notices if n[1] is not None]
    if messages and not direct:
        notes.append((f"{schema}_outbox", ""))
    args: list[object] = []
    ctes = []
    cols = ["now() AS now"]
    if messages:
        args += [[t for t, _, _ in messages], [k for _, k, _ in messages], [v for _, _, v in messages]]
        ctes.append(
            f'o AS (INSERT INTO "{schema}".outbox(topic, key, value) '
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) RETURNING id)"
        )
        cols.append("ARRAY(SELECT id FROM o ORDER BY id) AS ids")
    for n, stmt in enumerate(also):
        ctes.append(f"a{n} AS ({stmt.sql(len(args) + 1)})")
        args += stmt.args
        if stmt.returns:
            cols.append(f"ARRAY(SELECT * FROM a{n}) AS a{n}")
    for channel, payload in notes:
        args += [channel, payload]
        cols.append(f"pg_notify(${len(args) - 1}, ${len(args)})")
    if not ctes and len(cols) == 1 and not always:
        return None
    # A data-modifying CTE runs to completion whether or not the query reads it.
    query = ("WITH " + ", ".join(ctes) + " " if ctes else "") + "SELECT " + ", ".join(cols)
    row = await conn.fetchrow(query, *args)
    assert row is not None
    if direct and messages:
        assert pending is not None
        pending.ids.extend(row["ids"])
        pending.messages.extend(messages)
    return Inserted(row["now"], [list(row[f"a{n}"]) for n, stmt in enumerate(also) if stmt.returns])


async def enqueue(conn: asyncpg.Connection, schema: str, topic: str, env: Envelope) -> None:
    """Add an event to ``schema``'s outbox; call inside the transaction that made the change."""
    await insert_rows(conn, schema, [(topic, env.key, env.encode())])


async def enqueue_many(
    conn: asyncpg.Connection,
    schema: str,
    rows: list[tuple[str, Envelope]],
    notices: Iterable[Notice] = (),
    also: Sequence[Also] = (),
) -> Inserted | None:
    return await insert_rows(conn, schema, [(topic, env.key, env.encode()) for topic, env in rows], notices, also)


def _first_then_rest(
    ids: list[int], messages: list[Message], first_topics: Collection[str]
) -> list[tuple[list[int], list[Message]]]:
    """The rows in at most two sends: those for ``first_topics``, then the others (each part
    in the order given)."""
    if not first_topics:
        return [(ids, messages)]
    first = [i for i, m in enumerate(messages) if m[0] in first_topics]
    if not first or len(first) == len(messages):
        return [(ids, messages)]
    chosen = set(first)
    rest = [i for i in range(len(messages)) if i not in chosen]
    return [([ids[i] for i in part], [messages[i] for i in part]) for part in (first, rest)]


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
        idle_poll_interval: float = 5.0,
        retention_s: float = 0.0,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        # After a pass that found nothing to send or mark, the relay polls this rarely: writers on
        # the change path send their rows themselves and other writers NOTIFY, so the poll is a
        # net for a writer that died mid-send, and at rest it was a wake-up a second per service.
        self.idle_poll_interval = max(idle_poll_interval, poll_interval)
        self._busy = True  # the last pass sent or marked rows
        self.retention_s = retention_s
        self._next_prune = 0.0
        self._next_measure = 0.0
        self.replayed = 0
        self._wake = asyncio.Event()
        self._listen_conn: asyncpg.Connection | None = None
        self._lost = False  # the LISTEN connection died (asyncpg has already taken it back)
        self.published = 0
        # Rows writers of this process are sending after their commit (the relay skips them)
        # and rows they got acknowledged (deleted on the relay's next pass).
        self._claimed: set[int] = set()
        self._acked: list[int] = []

    async def publish_committed(
        self, ids: list[int], messages: list[Message], first_topics: Collection[str] = ()
    ) -> None:
        """Send committed outbox rows now (see :func:`publish_after_commit`), those for
        ``first_topics`` first. Never raises: on failure the rows not yet acknowledged are left
        to the relay, which is woken to retry them."""
        self._claimed.update(ids)
        try:
            for part_ids, part in _first_then_rest(ids, messages, first_topics):
                try:
                    await self.publisher.send_many(part)
                except Exception as exc:  # noqa: BLE001 - the rows are still in the outbox: the relay retries
                    log.warning(
                        "direct publish failed; the relay will send", extra={"error": f"{type(exc).__name__}: {exc}"}
                    )
                    self._wake.set()
                    return
                self._acked.extend(part_ids)
                self.published += len(part_ids)
                metrics.OUTBOX_PUBLISHED.labels(self.schema).inc(len(part_ids))
        finally:
            self._claimed.difference_update(ids)

    async def run(self) -> None:
        try:
            while True:
                try:
                    if self._listen_conn is None or self._lost:
                        await self._listen()
                    moved = await self.drain_once()
                except Exception as exc:  # noqa: BLE001 - a relay that dies stops every event of its service
                    # Seen on a PostgreSQL restart: asyncpg's InternalClientError while a broken
                    # connection is released; on a broker restart: KafkaError. All are retried.
                    log.warning("outbox relay error, will retry", extra={"error": f"{type(exc).__name__}: {exc}"})
                    moved = 0
                    await asyncio.sleep(self.poll_interval)  # back off from a failing dependency
                if moved >= self.batch_size:
                    continue
                await self._maybe_prune()
                await self._maybe_measure()
                self._wake.clear()
                try:
                    await asyncio.wait_for(
                        self._wake.wait(), self.poll_interval if self._busy else self.idle_poll_interval
                    )
                except TimeoutError:
                    pass
        finally:
            await self._unlisten()

    @property
    def listener_pid(self) -> int | None:
        """The server process of the LISTEN connection (None while there is none)."""
        conn = self._listen_conn
        return None if conn is None or self._lost else conn.get_server_pid()

    async def _listen(self) -> None:
        """(Re)opens the LISTEN connection. One lost with a database restart is replaced on the
        relay's next turn (its loss wakes the relay), and a pass follows at once: a NOTIFY may
        have come while nobody listened. Without this the relay fell back to its idle poll."""
        await self._unlisten()
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(f"{self.schema}_outbox", self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except BaseException:
            await self.pool.release(conn)
            raise
        self._listen_conn, self._lost = conn, False
        self._wake.set()

    async def _unlisten(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None or self._lost:
            return  # a lost connection went back to the pool by itself (asyncpg): nothing to undo
        try:
            conn.remove_termination_listener(self._on_lost)
            await conn.remove_listener(f"{self.schema}_outbox", self._on_notify)
        except Exception:  # noqa: BLE001 - the connection may be gone with a restarted database
            pass
        try:
            await self.pool.release(conn)
        except Exception:  # noqa: BLE001 - a broken connection: the pool opens a new one when asked
            pass

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    def _on_lost(self, *_: object) -> None:
        self._lost = True
        self._wake.set()

    async def drain_once(self) -> int:
        """Publish one batch; returns how many rows moved. Rows are marked published (or
        deleted, without retention) only after the broker acknowledged them. One relay per schema at a time (advisory lock), so events
        leave in commit order even when several replicas of a service run. Rows this process's
        writers publish themselves are skipped (sending them too would only duplicate)."""
        self._busy = bool(self._acked)
        async with self.pool.acquire() as conn:
            if self._acked:
                acked, self._acked = self._acked, []
                try:
                    await self._mark_published(conn, acked)
                except BaseException:
                    self._acked.extend(acked)
                    raise
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", f"outbox:{self.schema}"):
                    return 0
                rows = await conn.fetch(
                    f'SELECT id, topic, key, value FROM "{self.schema}".outbox'
                    f" WHERE {PENDING} AND id <> ALL($2::bigint[]) ORDER BY id LIMIT $1",
                    self.batch_size,
                    [*self._claimed, *self._acked],
                )
                if not rows:
                    return 0
                self._busy = True
                await self.publisher.send_many([(r["topic"], r["key"], bytes(r["value"])) for r in rows])
                await self._mark_published(conn, [r["id"] for r in rows])
        self.published += len(rows)
        metrics.OUTBOX_PUBLISHED.labels(self.schema).inc(len(rows))
        return len(rows)

    async def _mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        if self.retention_s > 0:
            await conn.execute(
                f'UPDATE "{self.schema}".outbox SET published_at = now() WHERE id = ANY($1::bigint[])', ids
            )
        else:
            await conn.execute(f'DELETE FROM "{self.schema}".outbox WHERE id = ANY($1::bigint[])', ids)

    async def replay(self) -> int:
        """The broker lost what it held (the embedded broker forgets every message on restart):
        publish the retained window again. The rows keep their ids, so they leave before anything
        newer and per-key order holds; consumers are idempotent, so what was consumed already
        only repeats. Returns how many rows were queued again."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                f'UPDATE "{self.schema}".outbox SET published_at = NULL WHERE published_at IS NOT NULL'
            )
        n = int(status.split()[-1])
        self.replayed += n
        log.warning("broker lost its state: replaying the retained outbox", extra={"schema": self.schema, "rows": n})
        self._wake.set()
        return n

    async def _maybe_measure(self) -> None:
        """Backlog and age of unpublished rows, for /metrics (at most every few seconds)."""
        now = time.monotonic()
        if now < self._next_measure:
            return
        self._next_measure = now + MEASURE_EVERY_S
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(
                    f"SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS age"
                    f' FROM "{self.schema}".outbox WHERE {PENDING}'
                )
        except Exception as exc:  # noqa: BLE001 - measuring is housekeeping; the next round retries
            log.info("outbox measure failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        metrics.OUTBOX_BACKLOG.labels(self.schema).set(row["n"])
        metrics.OUTBOX_OLDEST_AGE.labels(self.schema).set(float(row["age"]))

    async def _maybe_prune(self) -> None:
        """Drop published rows older than the retention window (at most every few seconds)."""
        now = time.monotonic()
        if self.retention_s <= 0 or now < self._next_prune:
            return
        self._next_prune = now + min(self.retention_s / 4, 30.0)
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    f'DELETE FROM "{self.schema}".outbox WHERE published_at < now() - make_interval(secs => $1)',
                    self.retention_s,
                )
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping; the next round retries
            log.warning("outbox prune failed", extra={"error": f"{type(exc).__name__}: {exc}"})
