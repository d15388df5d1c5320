"""Notices that the broker lost its state and sets off the recovery.

A replicated Kafka keeps topics, messages and committed offsets across restarts. The embedded
broker (Tansu, memory storage) forgets all of them. Each service runs one watch: every
``interval`` it lists the topics, and every ``ends_every`` intervals it also reads the end offset
of every partition. A topic that is
gone, or a partition whose end went *down* (a log never shrinks), means the broker lost what it
held. The watch then re-creates the missing topics (:func:`bus.ensure_topics`, our partition
count) and calls its listeners: the outbox relay replays its retained window, the device gateway
asks devices to resend the batches it forwarded but saw no answer for.

The comparison of end offsets is pure (:func:`log_shrunk`); the I/O is in :class:`BrokerWatch`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from offsync_shared import bus
from offsync_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

Listener = Callable[[], Awaitable[object]]

# The end offsets are read every this many checks; the topics are looked for at every one. The
# ends cost the embedded broker more as its logs grow (after a full `make bench` the watches'
# reads were most of its idle CPU), and they only tell what the topics do not when another
# process re-created the topics before this watch looked: a loss is then noticed a few
# intervals later, and the topics themselves are back within one either way.
ENDS_EVERY = 3


def log_shrunk(before: Mapping[TopicPartition, int], now: Mapping[TopicPartition, int]) -> list[TopicPartition]:
    """Partitions whose end offset is lower than when last seen, or that are gone."""
    return sorted((tp for tp, end in before.items() if now.get(tp, -1) < end), key=lambda tp: (tp.topic, tp.partition))


class BrokerWatch:
    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        partitions: int | None = None,
        *,
        interval: float = 1.0,
        topics: Iterable[Topic] = ALL_TOPICS,
        replication_factor: int | None = None,
        ends_every: int = ENDS_EVERY,
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.interval = interval
        self.replication_factor = replication_factor
        self.topics = [t.full(prefix) for t in topics]
        self._topic_defs = list(topics)
        self.listeners: list[Listener] = []
        self.ends: dict[TopicPartition, int] = {}  # end offsets as last seen
        self.losses = 0
        self._owed: list[Listener] = []  # listeners of the last loss that failed (database away): retried
        self._client: AIOKafkaConsumer | None = None
        self.ends_every = ends_every
        self._checks = 0

    def on_lost(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def run(self) -> None:
        try:
            while True:
                try:
                    if await self.check():
                        await self._recover()
                except (TimeoutError, KafkaError, OSError) as exc:
                    # The broker is away (restarting): look again next round.
                    log.info("broker watch: broker not answering", extra={"error": f"{type(exc).__name__}: {exc}"})
                    await self._close()
                await self._call_owed()
                await asyncio.sleep(self.interval)  # the watch's period, not a wait for a condition
        finally:
            await self._close()

    async def check(self) -> bool:
        """True when the broker lost state since the last check (topics gone or logs shrunk)."""
        client = await self._open()
        present = await asyncio.wait_for(client.topics(), 5)
        if any(t not in present for t in self.topics):  # open_runtime created them all: they were lost
            self.ends = {}
            return True
        self._checks += 1
        if self.ends and self._checks % self.ends_every:
            return False
        tps = [TopicPartition(t, p) for t in self.topics for p in (client.partitions_for_topic(t) or ())]
        now = await asyncio.wait_for(client.end_offsets(tps), 5)
        shrunk = log_shrunk(self.ends, now)
        self.ends = dict(now)
        if shrunk:
            log.warning(
                "broker watch: partition logs shrank",
                extra={"partitions": [f"{tp.topic}/{tp.partition}" for tp in shrunk[:8]]},
            )
        return bool(shrunk)

    async def _recover(self) -> None:
        self.losses += 1
        created = await bus.ensure_topics(
            self.bootstrap,
            self.prefix,
            self.partitions,
            self._topic_defs,
            timeout=10.0,
            replication_factor=self.replication_factor,
        )
        log.warning(
            "broker lost its state; recovering", extra={"created_topics": created, "listeners": len(self.listeners)}
        )
        self._owed = list(self.listeners)

    async def _call_owed(self) -> None:
        owed, self._owed = self._owed, []
        for listener in owed:
            try:
                await listener()
            except Exception:  # noqa: BLE001 - one listener failing must not starve the others
                log.exception("broker-loss listener failed; retried next round")
                self._owed.append(listener)

    async def _open(self) -> AIOKafkaConsumer:
        if self._client is None:
            client = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=5000
            )
            await client.start()
            self._client = client
        return self._client

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.stop()
            except Exception:  # noqa: BLE001 - closing a client of a broker that is gone
                pass
