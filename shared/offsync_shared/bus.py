"""The Kafka bus adapter (aiokafka): topic creation, a producer, and a consumer loop that
decodes, dispatches to one handler table and parks what it cannot handle on the dead-letter topic.

Offsets are committed only after a batch was handled, so delivery is at-least-once and handlers
must be idempotent (dedupe on event id or record version).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord, TopicPartition

from offsync_shared import metrics
from offsync_shared.envelope import Envelope, EnvelopeError
from offsync_shared.events import Event, decode
from offsync_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

PAST_END_CHECK_S = 2.0  # how often an idle consumer checks it is not beyond a re-created log's end


class _NoAutoCreateMetadataRequest(MetadataRequest):  # type: ignore[misc]  # aiokafka ships no types
    """Metadata requests that never create topics. aiokafka asks the broker to auto-create every
    topic it looks up; the embedded broker (Tansu) then creates it with its own partition count
    (4, not ours), and a restarted one did so from several clients at once while they kept
    producing. Topics are created only by :func:`ensure_topics`, with the right partition count."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


aiokafka.client.MetadataRequest = _NoAutoCreateMetadataRequest

Handler = Callable[[Event, Envelope], Awaitable[None]]
BatchHandler = Callable[[list[tuple[Event, Envelope]]], Awaitable[None]]


async def ensure_topics(
    bootstrap: str, prefix: str = "", partitions: int = 8, topics: Iterable[Topic] = ALL_TOPICS, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (the embedded broker forgets them on restart).
    Returns the names it created. Serialized within a process (several producers and the broker
    watch may notice a restarted broker at once); across processes the broker refuses all but
    one CreateTopics per name."""
    async with _ensure_lock():
        return await _ensure_topics(bootstrap, prefix, partitions, topics, timeout)


_ENSURE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _ensure_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    return _ENSURE_LOCKS.setdefault(loop, asyncio.Lock())


async def _ensure_topics(
    bootstrap: str, prefix: str, partitions: int, topics: Iterable[Topic], timeout: float
) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(t.full(prefix), num_partitions=partitions, replication_factor=1)
                for t in topics
                if t.full(prefix) not in existing
            ]
            if missing:
                try:
                    await admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
            return [t.name for t in missing]
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise
            log.info("broker not ready yet", extra={"error": str(exc)})
            await asyncio.sleep(0.2)  # bounded retry while the broker starts
        finally:
            await admin.close()


class Producer:
    """A started aiokafka producer; ``send_many`` waits for every acknowledgement."""

    def __init__(
        self, bootstrap: str, *, linger_ms: int = 0, topic_prefix: str | None = None, partitions: int = 8
    ) -> None:
        # acks=all and no idempotence: the embedded broker supports neither idempotent
        # producers nor transactions; duplicates are handled by idempotent consumers.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, max_request_size=8 * 1024 * 1024
        )
        self._bootstrap = bootstrap
        # When set, a failed send re-creates missing topics (a restarted embedded broker has
        # forgotten them all) before the error reaches the caller, whose retry then succeeds.
        self._topic_prefix = topic_prefix
        self._partitions = partitions

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, topic: str, env: Envelope) -> None:
        try:
            await self._producer.send_and_wait(topic, key=env.key.encode(), value=env.encode())
        except KafkaError:
            await self._recreate_topics()
            raise

    async def send_many(self, messages: list[tuple[str, str, bytes]]) -> None:
        try:
            futures = [await self._producer.send(t, key=k.encode(), value=v) for t, k, v in messages]
            await asyncio.gather(*futures)
        except KafkaError:
            await self._recreate_topics()
            raise

    async def _recreate_topics(self) -> None:
        if self._topic_prefix is None:
            return
        try:
            await ensure_topics(self._bootstrap, self._topic_prefix, self._partitions, timeout=5.0)
        except (KafkaError, OSError) as exc:  # the broker is still away: the caller retries anyway
            log.warning("could not re-create topics", extra={"error": str(exc)})


@dataclass
class ConsumerConfig:
    bootstrap: str
    topics: list[str]
    group_id: str | None
    dead_letter_topic: str
    auto_offset_reset: str = "earliest"
    max_records: int = 500
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    # How long the broker may hold an empty fetch. The embedded broker does not answer a held
    # fetch early when a record arrives, so this bounds delivery latency: latency-critical
    # consumers (the device gateway's notifications) lower it at the cost of more idle fetches.
    fetch_max_wait_ms: int = 50
    # A group-less consumer (e.g. a gateway that wants every notification) starts at the end;
    # a partition it meets later (a topic re-created by a restarted broker) it reads from the start.


class ConsumerLoop:
    """Reads topics, decodes envelopes and dispatches by event type.

    ``handlers`` maps event type -> handler for one event; ``batch_handler`` (optional) gets the
    whole decoded batch instead, for set-wise processing. Unknown types are skipped with a log
    line only if listed in ``ignore``; anything else undecodable goes to the dead-letter topic.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        producer: Producer,
        *,
        name: str,
        handlers: Mapping[str, Handler] | None = None,
        batch_handler: BatchHandler | None = None,
        ignore: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.producer = producer
        self.name = name
        self.handlers = dict(handlers or {})
        self.batch_handler = batch_handler
        self.ignore = set(ignore)
        self.consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.caught_up = asyncio.Event()
        self._end_checked = 0.0  # monotonic time of the last "past the log's end?" check

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            *self.config.topics,
            bootstrap_servers=self.config.bootstrap,
            group_id=self.config.group_id,
            enable_auto_commit=False,
            # Group-less: "earliest" for partitions that appear later (a re-created topic holds only
            # what was produced since; "latest" would skip it); the start is set to the end below.
            auto_offset_reset=self.config.auto_offset_reset if self.config.group_id else "earliest",
            max_poll_records=self.config.max_records,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
        )
        await self.consumer.start()
        if not self.config.group_id and self.consumer.assignment():
            await self.consumer.seek_to_end()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def rewind(self) -> None:
        """The broker lost its logs (the embedded one re-creates topics empty after a restart). It
        answers a fetch past the new end with nothing, not an out-of-range error, so a consumer
        would sit at its old position until the new log grew past it: read what the broker holds
        now from the start instead (handlers are idempotent; a rejoining group does the same)."""
        if self.consumer is None:
            return
        parts = self.consumer.assignment()
        try:
            if parts:
                await self.consumer.seek_to_beginning(*parts)
        except (KafkaError, IllegalStateError) as exc:  # a rebalance took them meanwhile: it resets them itself
            log.warning("could not rewind", extra={"consumer": self.name, "error": str(exc)})
        log.warning(
            "broker lost its logs: consumer reads them from the start",
            extra={"consumer": self.name, "partitions": len(parts)},
        )

    async def rewind_if_past_end(self) -> list[str]:
        """While idle: a position beyond a partition's end means its log was lost and re-created
        (the embedded broker answers such fetches with nothing, so the consumer would wait until
        the new log grew past it). Independent of the broker watch, which can miss a loss that
        another service's watch repaired first: read those partitions from the start."""
        if self.consumer is None:
            return []
        parts = list(self.consumer.assignment())
        if not parts:
            return []
        try:
            ends = await asyncio.wait_for(self.consumer.end_offsets(parts), 5)
            past = []
            for tp in parts:
                pos = await asyncio.wait_for(self.consumer.position(tp), 5)
                if pos > ends.get(tp, pos):
                    past.append(tp)
            if past:
                await self.consumer.seek_to_beginning(*past)
        except (TimeoutError, KafkaError, IllegalStateError) as exc:  # broker away or a rebalance: next time
            log.info(
                "past-the-end check skipped", extra={"consumer": self.name, "error": f"{type(exc).__name__}: {exc}"}
            )
            return []
        if past:
            log.warning(
                "consumer was past the end of re-created logs: reads them from the start",
                extra={"consumer": self.name, "partitions": [f"{tp.topic}/{tp.partition}" for tp in past[:8]]},
            )
        return [f"{tp.topic}/{tp.partition}" for tp in past]

    async def run(self) -> None:
        assert self.consumer is not None, "start() first"
        while True:
            batch = await self.consumer.getmany(timeout_ms=500, max_records=self.config.max_records)
            self._measure_lag(batch)
            if not batch:
                self.caught_up.set()
                if time.monotonic() - self._end_checked >= PAST_END_CHECK_S:
                    self._end_checked = time.monotonic()
                    await self.rewind_if_past_end()
                continue
            records = [r for part in batch.values() for r in part]
            await self.handle_records(records)
            if self.config.group_id:
                try:
                    await self.consumer.commit()
                except KafkaError as exc:
                    # The group moved on (rebalance, or a restarted broker forgot it): this batch
                    # is delivered again to whoever owns the partition now, and handlers are
                    # idempotent. Dying here would leave the service up but consuming nothing.
                    log.warning(
                        "offset commit failed; batch will be redelivered",
                        extra={"consumer": self.name, "error": str(exc)},
                    )
            self.processed += len(records)
            if not self.caught_up.is_set() and await self._at_high_watermark():
                self.caught_up.set()

    def _measure_lag(self, batch: Mapping[TopicPartition, list[ConsumerRecord]]) -> None:
        """Lag per partition from what the last fetch said (no extra round trip): the partition's
        end minus the offset after the last record taken; an empty poll means caught up."""
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            records = batch.get(tp)
            if not records:
                if not batch:
                    metrics.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(0)
                continue
            high = self.consumer.highwater(tp)
            if high is not None:
                lag = max(0, high - records[-1].offset - 1)
                metrics.CONSUMER_LAG.labels(self.name, tp.topic, str(tp.partition)).set(lag)

    async def _at_high_watermark(self) -> bool:
        """Consumed up to the end the broker last reported on every assigned partition. Under a
        steady flow a poll is never empty, so "an empty poll" alone would never mean caught up."""
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            high = self.consumer.highwater(tp)
            if high is None or await self.consumer.position(tp) < high:
                return False
        return True

    async def handle_records(self, records: list[ConsumerRecord]) -> None:
        decoded: list[tuple[Event, Envelope]] = []
        for rec in records:
            try:
                env = Envelope.decode(rec.value)
                if env.type in self.ignore:
                    continue
                decoded.append((decode(env), env))
            except EnvelopeError as exc:
                await self.dead_letter(rec, f"undecodable: {exc}")
        if self.batch_handler is not None:
            if decoded:
                await self.batch_handler(decoded)
            return
        for event, env in decoded:
            handler = self.handlers.get(env.type)
            if handler is None:
                await self.dead_letter_env(env, f"no handler for {env.type} in {self.name}")
                continue
            try:
                await handler(event, env)
                metrics.EVENTS_HANDLED.labels(self.name, env.type).inc()
            except Exception as exc:  # a poison event must not block the partition
                log.exception("handler failed", extra={"event_id": env.id, "type": env.type})
                await self.dead_letter_env(env, f"handler error: {type(exc).__name__}: {exc}")

    async def dead_letter(self, rec: ConsumerRecord, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(self.name).inc()
        log.warning("dead-lettered message", extra={"topic": rec.topic, "offset": rec.offset, "reason": reason})
        env = Envelope(
            type="dead_letter",
            key=rec.topic,
            payload={
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "reason": reason,
                "consumer": self.name,
                "value": (rec.value or b"")[:65536].decode("utf-8", "replace"),
            },
        )
        await self.producer.send(self.config.dead_letter_topic, env)

    async def dead_letter_env(self, env: Envelope, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(self.name).inc()
        log.warning("dead-lettered event", extra={"event_id": env.id, "type": env.type, "reason": reason})
        dl = Envelope(
            type="dead_letter",
            key=env.type,
            payload={"reason": reason, "consumer": self.name, "envelope": env.encode().decode()},
        )
        await self.producer.send(self.config.dead_letter_topic, dl)
