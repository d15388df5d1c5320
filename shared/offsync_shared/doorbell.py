"""The doorbell: producers ring it (PostgreSQL ``NOTIFY offsync_bell, '<topic>'``) after the
broker acknowledged records on a topic, and consumers paused at rest listen for it
(``rest_policy``), so an idle consumer on the embedded broker sends no fetch at all.

Every record a consumer reads on the embedded stack is produced by a service's ``bus.Producer``
(outbox relays, writers that send after their commit, the gateway's device batches), which rings
through this object; the bell is rung only after the send was acknowledged, so a woken consumer
finds the record. Ringing is best effort and never blocks or fails a send: a bell lost to a
database away costs the consumers latency (their safety-net timer), never data. A topic rung
less than ``min_gap_s`` ago is not rung again: its consumers are still on the short wait then.

Listening uses one dedicated connection per process, opened when the first consumer subscribes;
when it is lost (a database restart) it is opened again, and every subscriber is rung, since a
bell may have rung while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "offsync_bell"
RING_SQL = f"SELECT pg_notify('{CHANNEL}', t) FROM unnest($1::text[]) AS t"

OnRing = Callable[[], None]
OnPayload = Callable[[str], None]


async def ring_now(conn: asyncpg.Connection, topics: Iterable[str]) -> None:
    """Ring for ``topics`` on ``conn`` (for code that produces without a service's producer)."""
    await conn.execute(RING_SQL, sorted(set(topics)))


class Doorbell:
    """A process's bell: rings through ``pool``, listens on its own connection to ``dsn``."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        *,
        min_gap_s: float = 0.1,
        reconnect_max_s: float = 1.0,
        liveness_s: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.name = name  # the listening connection's application_name
        self.pool = pool
        self.min_gap_s = min_gap_s
        self.reconnect_max_s = reconnect_max_s
        self.liveness_s = liveness_s
        self._subscribers: dict[str, list[OnRing]] = {}
        self._channels: dict[str, OnPayload] = {}  # other channels heard on the same connection
        self._wanted = asyncio.Event()  # someone subscribed: open the listening connection
        self._to_ring: set[str] = set()
        self._have_rings = asyncio.Event()
        self._rung_at: dict[str, float] = {}
        self.listening = False
        self.listener_pid: int | None = None  # the listening connection's server process
        self.rings_sent = 0
        self.rings_heard = 0
        self.reconnects = 0

    # -- ringing ------------------------------------------------------------------------------
    def ring(self, topics: Iterable[str]) -> None:
        """Queue a ring for ``topics`` (their records are acknowledged). Never blocks, never raises."""
        now = time.monotonic()
        for t in topics:
            if now - self._rung_at.get(t, -1e9) >= self.min_gap_s:
                self._rung_at[t] = now
                self._to_ring.add(t)
        if self._to_ring:
            self._have_rings.set()

    async def _ring_loop(self) -> None:
        while True:
            await self._have_rings.wait()
            self._have_rings.clear()
            topics, self._to_ring = sorted(self._to_ring), set()
            try:
                async with self.pool.acquire(timeout=5) as conn:
                    await ring_now(conn, topics)
                self.rings_sent += len(topics)
            except Exception as exc:  # noqa: BLE001 - a lost bell costs latency only (the safety net)
                log.info("doorbell not rung", extra={"topics": topics, "error": f"{type(exc).__name__}: {exc}"})
                for t in topics:
                    self._rung_at.pop(t, None)

    # -- listening ----------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str], on_ring: OnRing) -> Callable[[], None]:
        """Call ``on_ring`` when one of ``topics`` is rung (in the event loop, so it must not
        block). Returns the unsubscribe function."""
        names = list(dict.fromkeys(topics))
        for t in names:
            self._subscribers.setdefault(t, []).append(on_ring)
        self._wanted.set()

        def unsubscribe() -> None:
            for t in names:
                with contextlib.suppress(KeyError, ValueError):
                    self._subscribers[t].remove(on_ring)

        return unsubscribe

    def listen(self, channel: str, on_payload: OnPayload) -> None:
        """Also hear ``channel`` on the listening connection (one per process): ``on_payload``
        gets each payload, in the event loop, so it must not block (e.g. ops_hint)."""
        self._channels[channel] = on_payload
        self._wanted.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.rings_heard += 1
        for on_ring in list(self._subscribers.get(payload, ())):
            self._call(on_ring)

    def _ring_everyone(self) -> None:
        for on_ring in {id(f): f for fs in self._subscribers.values() for f in fs}.values():
            self._call(on_ring)

    def _heard(self, on_payload: OnPayload) -> Callable[[object, int, str, str], None]:
        return lambda _conn, _pid, _channel, payload: self._call(on_payload, payload)

    @staticmethod
    def _call(subscriber: Callable[..., None], *args: object) -> None:
        try:
            subscriber(*args)
        except Exception:  # noqa: BLE001 - one subscriber's bug must not silence the others
            log.exception("doorbell subscriber failed")

    async def _listen_loop(self) -> None:
        await self._wanted.wait()
        backoff = 0.2
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.dsn, timeout=5, server_settings={"application_name": self.name} if self.name else None
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                for channel, on_payload in self._channels.items():
                    await conn.add_listener(channel, self._heard(on_payload))
                self.listener_pid = conn.get_server_pid()
                self.listening = True
                backoff = 0.2
                self._ring_everyone()  # rings may have gone unheard while we were not listening
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self.liveness_s)
                    if not lost.is_set():
                        # A connection can die without the socket saying so (a frozen server).
                        await asyncio.wait_for(conn.execute("SELECT 1"), 5)
            except Exception as exc:  # noqa: BLE001 - the database is away: listen again when it is back
                log.info("doorbell not listening", extra={"error": f"{type(exc).__name__}: {exc}"})
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            self.reconnects += 1
            # Back off from a database that is away, but not far: bells are unheard until then.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.reconnect_max_s)

    async def run(self) -> None:
        await asyncio.gather(self._ring_loop(), self._listen_loop())
