"""The Kafka bus adapter (aiokafka): topic creation, a producer, and a consumer loop that
decodes, dispatches to one handler table and parks what it cannot handle on the dead-letter topic.

The loop owns the fallback every set-wise consumer needs: a poll's events go to their handler
together; if that fails, one at a time; an event that fails alone is dead-lettered (and its
service told, ``on_parked``), so one poison event never blocks its partition.

Offsets are committed only after a batch was handled, so delivery is at-least-once and handlers
must be idempotent (dedupe on event id or record version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IllegalStateError, KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord, TopicPartition

from offsync_shared import metrics, topic_specs
from offsync_shared.consumer_stop import stop_consumer
from offsync_shared.doorbell import Doorbell
from offsync_shared.envelope import Envelope, EnvelopeError
from offsync_shared.events import Event, decode
from offsync_shared.fetch_wait import AdaptiveWait
from offsync_shared.log_ends import past_end
from offsync_shared.partitioning import partition_for
from offsync_shared.rest_policy import RestPolicy, Wake
from offsync_shared.topics import ALL_TOPICS, Topic

log = logging.getLogger(__name__)

PAST_END_CHECK_S = 2.0  # how often an idle consumer checks it is not beyond a re-created log's end
PAUSED_TICK_S = 1.0  # how often a paused consumer looks for partitions a rebalance left unpaused
# A safety-net look's fetch wait and poll: short, so a bell that rings meanwhile waits little for
# the fetch in flight; long enough that the look is one or two fetches, not a burst.
PROBE_WAIT_MS = 50
PROBE_POLL_MS = 100
# Largest record batch send_many builds for one partition (and aiokafka's own per-partition
# buffer). The default 16 KB split a poll's ~5,000 outbox events of an upload storm into ~50
# batches per partition, each waiting for the one before it to be drained into a request.
MAX_BATCH_BYTES = 512 * 1024
# How often a starting consumer asks again for topics its broker does not know yet.
TOPICS_RETRY_S = 0.2
# aiokafka's fetcher task wakes at least this often to look for work no future announces
# (its default). Everything a paused consumer waits for does announce itself (a resume, a
# rebalance, a finished request), so there the tick only cost five wake-ups a second at rest.
FETCHER_TICK_MS = 200
PAUSING_FETCHER_TICK_MS = 1000


class TopicsMissing(RuntimeError):
    """A consumer's topics were still unknown to the broker at its start's deadline."""


class _NoAutoCreateMetadataRequest(MetadataRequest):  # type: ignore[misc]  # aiokafka ships no types
    """Metadata requests that never create topics. aiokafka asks the broker to auto-create every
    topic it looks up; the embedded broker (Tansu) then creates it with its own partition count
    (4, not ours), and a restarted one did so from several clients at once while they kept
    producing. Topics are created only by :func:`ensure_topics`, with the right partition count."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation)


aiokafka.client.MetadataRequest = _NoAutoCreateMetadataRequest

Handler = Callable[[Event, Envelope], Awaitable[None]]
Decoded = tuple[Event, Envelope]
# Every event of its types in one poll at once, in poll order (several types may share one).
SetHandler = Callable[[Sequence[Decoded]], Awaitable[None]]
# Runs one attempt to handle events, waiting out failures that say nothing about the events
# (e.g. ``db.while_away``: a database restart must not send good events to the dead letters).
Retry = Callable[[Callable[[], Awaitable[None]], str], Awaitable[None]]
# Told about an event its handler failed on even alone, after it was dead-lettered.
Parked = Callable[[Event, Envelope, Exception], Awaitable[None]]


async def _once(attempt: Callable[[], Awaitable[None]], what: str) -> None:
    await attempt()


async def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    partitions: int | None = None,
    topics: Iterable[Topic] = ALL_TOPICS,
    timeout: float = 30.0,
    *,
    replication_factor: int | None = None,
    check_existing: bool = False,
) -> list[str]:
    """Create the topics that do not exist yet, as ``topics.yaml`` defines them (fitted to the
    cluster's broker count; ``partitions`` / ``replication_factor`` override the definition).
    With ``check_existing``, an existing topic whose settings differ gets a warning (it is never
    altered: repartitioning would reorder keys). Returns the names it created. Serialized within
    a process (several producers and the broker watch may notice a restarted embedded broker at
    once); across processes the broker refuses all but one CreateTopics per name."""
    async with _ensure_lock():
        return await _ensure_topics(
            bootstrap, prefix, partitions, list(topics), timeout, replication_factor, check_existing
        )


_ENSURE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _ensure_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    return _ENSURE_LOCKS.setdefault(loop, asyncio.Lock())


async def _ensure_topics(
    bootstrap: str,
    prefix: str,
    partitions: int | None,
    topics: list[Topic],
    timeout: float,
    replication_factor: int | None,
    check_existing: bool,
) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            brokers = len(cluster.get("brokers") or ()) or 1
            fitted = topic_specs.fit_all(
                [t.name for t in topics],
                prefix,
                brokers=brokers,
                partitions=partitions,
                replication_factor=replication_factor,
            )
            existing = set(await admin.list_topics())
            missing = [f for f in fitted if f.full_name not in existing]
            below = {f.full_name: f.notes for f in missing if f.notes}
            if below:
                # One line for the lot: on a one-broker stack every topic is capped alike.
                reasons = sorted({note for notes in below.values() for note in notes})
                log.warning(
                    "topics created below their definition",
                    extra={"topics": sorted(below), "why": reasons},
                )
            if missing:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(
                                f.full_name,
                                num_partitions=f.spec.partitions,
                                replication_factor=f.spec.replication_factor,
                                topic_configs=f.spec.configs(),
                            )
                            for f in missing
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass
            if check_existing:
                await _warn_on_differences(admin, [f for f in fitted if f.full_name in existing])
            return [f.spec.name for f in missing]
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise
            log.info("broker not ready yet", extra={"error": str(exc)})
            await asyncio.sleep(0.2)  # bounded retry while the broker starts
        finally:
            await admin.close()


async def _warn_on_differences(admin: AIOKafkaAdminClient, fitted: list[topic_specs.Fitted]) -> None:
    if not fitted:
        return
    described = {t["topic"]: t for t in await admin.describe_topics([f.full_name for f in fitted])}
    configs: dict[str, dict[str, str]] = {}
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, f.full_name) for f in fitted]
        for resp in await admin.describe_configs(resources):
            for res in resp.to_object()["resources"]:
                configs[res["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in res["config_entries"] if e["config_value"] is not None
                }
    except (KafkaError, KeyError, TypeError) as exc:  # the embedded broker answers no DescribeConfigs
        log.info("topic configs not described; comparing partitions and replicas only", extra={"error": str(exc)})
    for f in fitted:
        meta = described.get(f.full_name)
        if meta is None or not meta.get("partitions"):
            continue
        parts = meta["partitions"]
        observed = topic_specs.Observed(
            partitions=len(parts),
            replication_factor=min(len(p["replicas"]) for p in parts),
            configs=configs.get(f.full_name, {}),
        )
        diffs = topic_specs.differences(f.spec, observed)
        if diffs:
            log.warning(
                f"topic {f.full_name} exists with settings that differ from topics.yaml (left as is): "
                + "; ".join(diffs),
                extra={"topic": f.full_name, "differences": diffs},
            )


class Producer:
    """A started aiokafka producer; ``send_many`` waits for every acknowledgement."""

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int = 0,
        topic_prefix: str | None = None,
        partitions: int | None = None,
        replication_factor: int | None = None,
        bell: Doorbell | None = None,
    ) -> None:
        # acks=all and no idempotence: the embedded broker supports neither idempotent
        # producers nor transactions; duplicates are handled by idempotent consumers.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            max_request_size=8 * 1024 * 1024,
            max_batch_size=MAX_BATCH_BYTES,
        )
        self._bootstrap = bootstrap
        # When set, a failed send re-creates missing topics (a restarted embedded broker has
        # forgotten them all) before the error reaches the caller, whose retry then succeeds.
        self._topic_prefix = topic_prefix
        self._partitions = partitions
        self._replication_factor = replication_factor
        # Rung for the topics of every acknowledged send: consumers paused at rest wake on it.
        self.bell = bell

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
        if self.bell is not None:
            self.bell.ring((topic,))

    async def send_many(self, messages: list[tuple[str, str, bytes]]) -> None:
        """Send (topic, key, value) messages and wait for every acknowledgement. Each key goes to
        the partition Kafka's default partitioner gives it, in the order given; the messages of
        one partition travel as record batches built here (one ``send`` per message cost ~20 µs
        of aiokafka's bookkeeping, the main cost of publishing an upload storm's events)."""
        if not messages:
            return
        try:
            futures = []
            for (topic, partition), items in (await self._by_partition(messages)).items():
                batch = self._producer.create_batch()
                for key, value in items:
                    if batch.append(timestamp=None, key=key, value=value) is None:  # full: send, start another
                        futures.append(await self._submit(batch, topic, partition))
                        batch = self._producer.create_batch()
                        batch.append(timestamp=None, key=key, value=value)  # the first record always fits
                futures.append(await self._submit(batch, topic, partition))
            await asyncio.gather(*futures)
        except KafkaError:
            await self._recreate_topics()
            raise
        if self.bell is not None:
            self.bell.ring({t for t, _, _ in messages})

    async def _by_partition(
        self, messages: list[tuple[str, str, bytes]]
    ) -> dict[tuple[str, int], list[tuple[bytes, bytes]]]:
        """The messages by (topic, partition), each partition's in the order given; partitions as
        aiokafka's DefaultPartitioner picks them for a key (index into the sorted partition ids)."""
        known: dict[str, list[int]] = {}
        out: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        for topic, key, value in messages:
            ids = known.get(topic)
            if ids is None:
                ids = known[topic] = sorted(await self._producer.partitions_for(topic))
            k = key.encode()
            out.setdefault((topic, ids[partition_for(k, len(ids))]), []).append((k, value))
        return out

    async def _submit(self, batch: BatchBuilder, topic: str, partition: int) -> asyncio.Future[object]:
        batch.close()  # nothing else may join it: its records are exactly the ones given here
        future: asyncio.Future[object] = await self._producer.send_batch(batch, topic, partition=partition)
        return future

    async def _recreate_topics(self) -> None:
        if self._topic_prefix is None:
            return
        try:
            await ensure_topics(
                self._bootstrap,
                self._topic_prefix,
                self._partitions,
                timeout=5.0,
                replication_factor=self._replication_factor,
            )
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
    # Set on a broker that answers a held fetch only when its wait runs out (the embedded one):
    # the wait stretches from fetch_max_wait_ms to this at rest (fetch_wait.AdaptiveWait), so an
    # idle consumer fetches a few times a second instead of every few ms. None: a fixed wait.
    fetch_idle_wait_ms: int | None = None
    # With a doorbell (ConsumerLoop's ``bell``) and an idle wait: instead of the idle wait's held
    # fetches, the consumer pauses its partitions at rest and wakes on the bell, or after this
    # many seconds without one (the safety net: a missed bell costs latency, never data).
    doorbell_safety_net_s: float = 5.0
    # How long start() waits for topics the broker does not know yet. On a cluster, a topic just
    # created through one broker reaches the others' metadata a moment later, and a group-less
    # consumer asking one of those fails its start; a service started before whoever creates the
    # topics waits for them the same way.
    topics_wait_s: float = 30.0
    # aiokafka's bound on one request, and on its start's own wait for unknown topics (its
    # default; tests lower it to reach the retry above quickly).
    request_timeout_ms: int = 40000
    # A group-less consumer (e.g. a gateway that wants every notification) starts at the end;
    # a partition it meets later (a topic re-created by a restarted broker) it reads from the start.


class ConsumerLoop:
    """Reads topics, decodes envelopes and dispatches by event type: the service's whole wiring
    is its handler table.

    ``handlers`` maps event type -> handler for one event; ``set_handlers`` maps event type ->
    handler for all the poll's events of the types it is mapped to (see the module docstring for
    the fallback). ``retry`` wraps every attempt. Types listed in ``ignore`` are skipped;
    anything undecodable or without a handler goes to the dead-letter topic.
    """

    def __init__(
        self,
        config: ConsumerConfig,
        producer: Producer,
        *,
        name: str,
        handlers: Mapping[str, Handler] | None = None,
        set_handlers: Mapping[str, SetHandler] | None = None,
        ignore: Iterable[str] = (),
        retry: Retry = _once,
        on_parked: Parked | None = None,
        bell: Doorbell | None = None,
    ) -> None:
        self.config = config
        self.producer = producer
        self.name = name
        self.handlers = dict(handlers or {})
        self.set_handlers = dict(set_handlers or {})
        assert not self.handlers.keys() & self.set_handlers.keys(), "one handler per event type"
        self.retry = retry
        self.on_parked = on_parked
        self.ignore = set(ignore)
        self.consumer: AIOKafkaConsumer | None = None
        self.processed = 0
        self.caught_up = asyncio.Event()
        self._end_checked = 0.0  # monotonic time of the last "past the log's end?" check
        self.fetch_wait: AdaptiveWait | None = None
        # Pausing at rest (rest_policy): only with a bell and an idle wait, i.e. on the embedded
        # broker; Apache Kafka answers a held fetch as soon as data arrives and never pauses.
        self.bell = bell
        self.rest: RestPolicy | None = None
        self.wakes: dict[Wake, int] = dict.fromkeys(Wake, 0)
        self._rung = False
        self._looking_since_ms = 0  # wall clock (aiokafka's fetch answer time) of a safety-net wake
        self._bell_heard = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self.topic_waits = 0  # starts that found a topic unknown to the broker

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
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
            request_timeout_ms=self.config.request_timeout_ms,
            consumer_timeout_ms=PAUSING_FETCHER_TICK_MS if self._pauses_at_rest else FETCHER_TICK_MS,
        )

    @property
    def _pauses_at_rest(self) -> bool:
        return self.bell is not None and self.config.fetch_idle_wait_ms is not None

    async def _started_consumer(self) -> AIOKafkaConsumer:
        """A started consumer, once the broker knows every topic, or :class:`TopicsMissing` at the
        deadline. aiokafka's start waits for unknown topics itself (up to its request timeout),
        but a group-less consumer then asks for metadata once more and fails if that answer lacks
        one: on a cluster, a broker that has not yet heard of a topic just created elsewhere."""
        deadline = time.monotonic() + self.config.topics_wait_s
        while True:
            consumer = self._new_consumer()
            try:
                await consumer.start()
                return consumer
            except UnknownTopicOrPartitionError:
                await stop_consumer(consumer)
            self.topic_waits += 1
            if time.monotonic() >= deadline:
                raise TopicsMissing(
                    f"consumer {self.name}: the broker at {self.config.bootstrap} still does not know "
                    f"{', '.join(self.config.topics)} after {self.config.topics_wait_s:g} s; "
                    "are the topics created (the services create them at start) and is the prefix right?"
                )
            if self.topic_waits == 1:
                log.warning(
                    "topics not known to the broker yet: waiting for them",
                    extra={"consumer": self.name, "topics": self.config.topics},
                )
            await asyncio.sleep(TOPICS_RETRY_S)  # a retry interval while the cluster's metadata settles

    async def start(self) -> None:
        self.consumer = await self._started_consumer()
        if self.config.fetch_idle_wait_ms is not None and hasattr(self.consumer, "_fetcher"):
            self.fetch_wait = AdaptiveWait(
                self.config.fetch_max_wait_ms, self.config.fetch_idle_wait_ms, started_at=time.monotonic()
            )
            if self.bell is not None:
                self.rest = RestPolicy(self.config.doorbell_safety_net_s)
                self._unsubscribe = self.bell.subscribe(self.config.topics, self._on_bell)
        if not self.config.group_id and self.consumer.assignment():
            await self.consumer.seek_to_end()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.consumer is not None:
            await stop_consumer(self.consumer)

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
        self._on_bell()  # paused at rest: wake up and read
        log.warning(
            "broker lost its logs: consumer reads them from the start",
            extra={"consumer": self.name, "partitions": len(parts)},
        )

    async def rewind_if_past_end(self) -> list[str]:
        """While idle: a position beyond a partition's end means its log was lost and re-created
        (the embedded broker answers such fetches with nothing, so the consumer would wait until
        the new log grew past it). Independent of the broker watch, which can miss a loss that
        another service's watch repaired first: read those partitions from the start. The verdict
        is :func:`broker_watch.past_end`: the fetch's own high watermark and ListOffsets must
        both be below the position (ListOffsets alone lags on the embedded broker)."""
        if self.consumer is None:
            return []
        parts = list(self.consumer.assignment())
        if not parts:
            return []
        try:
            # Only partitions whose last fetch answer already put them past the end are worth a
            # ListOffsets round trip: at rest that is none, and the check costs nothing.
            suspects = []
            for tp in parts:
                pos = await asyncio.wait_for(self.consumer.position(tp), 5)
                high = self.consumer.highwater(tp)
                if high is not None and pos > high:
                    suspects.append((tp, pos, high))
            past = []
            if suspects:
                ends = await asyncio.wait_for(self.consumer.end_offsets([tp for tp, _, _ in suspects]), 5)
                past = [tp for tp, pos, high in suspects if past_end(pos, high, ends.get(tp))]
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
            if self.rest is not None and self.rest.paused:
                await self._rest_or_wake()
                continue
            probing = self.rest is not None and self.rest.probing
            batch = await self.consumer.getmany(
                timeout_ms=PROBE_POLL_MS if probing else 500, max_records=self.config.max_records
            )
            # Before any await: the fetcher sends its next fetch as soon as this poll took the
            # records, and it should already carry the short wait.
            self._adapt_fetch_wait(bool(batch))
            self._measure_lag(batch)
            if not batch:
                self.caught_up.set()
                if time.monotonic() - self._end_checked >= PAST_END_CHECK_S:
                    self._end_checked = time.monotonic()
                    await self.rewind_if_past_end()
                await self._maybe_pause()
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

    def _adapt_fetch_wait(self, got_records: bool) -> None:
        if self.fetch_wait is None:
            return
        wait = self.fetch_wait.after_poll(time.monotonic(), got_records)
        if self.rest is not None:
            if got_records:
                self.rest.records_came()
            elif self.rest.probing:
                wait = min(wait, PROBE_WAIT_MS)
        self._set_fetch_wait(wait)

    def _set_fetch_wait(self, wait: int) -> None:
        # aiokafka reads the wait from this attribute for each fetch it builds and offers no public
        # setter (pinned release; start() checked the fetcher exists).
        self.consumer._fetcher._fetch_max_wait_ms = wait  # type: ignore[union-attr]  # noqa: SLF001

    def _on_bell(self) -> None:
        """A producer rang for one of our topics (or we must look again): records are coming.
        Not paused: back to the short wait at once, before the fetcher builds its next fetch."""
        self._rung = True
        self._bell_heard.set()
        if self.fetch_wait is not None and self.consumer is not None and not (self.rest and self.rest.paused):
            self._set_fetch_wait(self.fetch_wait.ring(time.monotonic()))

    async def _maybe_pause(self) -> None:
        """After an empty poll past the hot window: pause every assigned partition (aiokafka
        then sends no fetch; its fetcher waits for a resume). Last, a look past the logs' ends
        with the high watermarks of the fetches just answered (a paused consumer learns of none)."""
        assert self.consumer is not None
        if self.rest is None or self.fetch_wait is None:
            return
        looked = self.rest.probing and self._looked()  # only a safety-net look asks
        if not self.rest.may_pause(time.monotonic(), resting=self.fetch_wait.cooling, looked=looked):
            return
        if await self.rewind_if_past_end():
            return
        parts = self.consumer.assignment()
        # A bell may have rung during that look (it put the wait back to short).
        if not parts or not self.fetch_wait.cooling:
            return
        self._rung = False
        self.consumer.pause(*parts)
        self.rest.pause(time.monotonic())

    async def _rest_or_wake(self) -> None:
        """Paused: sleep until the bell, the next tick or the safety net; resume if one says so."""
        assert self.consumer is not None and self.rest is not None and self.fetch_wait is not None
        now = time.monotonic()
        unpaused = bool(self.consumer.assignment() - self.consumer.paused())
        reason = self.rest.wake(now, rung=self._rung, unpaused_partitions=unpaused)
        if reason is None:
            self._bell_heard.clear()  # no await since _rung was read: no bell can slip between
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bell_heard.wait(), self.rest.next_look_in(now, PAUSED_TICK_S))
            return
        self.wakes[reason] += 1
        self._rung = False
        if reason is Wake.SAFETY_NET:
            # One short look (not the hot window): it pauses again once every partition's fetch
            # was answered, if that found nothing.
            self._looking_since_ms = int(time.time() * 1000)
            self._set_fetch_wait(PROBE_WAIT_MS)
        else:
            self._set_fetch_wait(self.fetch_wait.ring(now))
        self.consumer.resume(*self.consumer.paused())

    def _looked(self) -> bool:
        """Every assigned partition had a fetch answered since the safety net woke the consumer."""
        assert self.consumer is not None
        try:
            stamps = [self.consumer.last_poll_timestamp(tp) for tp in self.consumer.assignment()]
        except AssertionError:  # a rebalance took a partition meanwhile: look again next poll
            return False
        return all(ts is not None and ts >= self._looking_since_ms for ts in stamps)

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
        decoded: list[Decoded] = []
        for rec in records:
            try:
                env = Envelope.decode(rec.value)
                if env.type in self.ignore:
                    continue
                decoded.append((decode(env), env))
            except EnvelopeError as exc:
                await self.dead_letter(rec, f"undecodable: {exc}")
        await self.handle_decoded(decoded)

    async def handle_decoded(self, decoded: Sequence[Decoded]) -> None:
        """Dispatch one poll's decoded events through the handler table (per-event handlers in
        poll order, then each set handler once with its events)."""
        groups: dict[SetHandler, list[Decoded]] = {}
        for event, env in decoded:
            set_handler = self.set_handlers.get(env.type)
            if set_handler is not None:
                groups.setdefault(set_handler, []).append((event, env))
                continue
            handler = self.handlers.get(env.type)
            if handler is None:
                await self.dead_letter_env(env, f"no handler for {env.type} in {self.name}")
                continue
            try:
                if self.retry is _once:  # the gateway's notifications: no wrapper per event
                    await handler(event, env)
                else:
                    await self.retry(lambda h=handler, e=event, v=env: h(e, v), f"{self.name} {env.type}")  # type: ignore[misc]
                metrics.EVENTS_HANDLED.labels(self.name, env.type).inc()
            except Exception as exc:  # a poison event must not block the partition
                log.exception("handler failed", extra={"event_id": env.id, "type": env.type})
                await self._park(event, env, exc)
        for set_handler, group in groups.items():
            await self._handle_set(set_handler, group)

    async def _handle_set(self, handler: SetHandler, group: list[Decoded]) -> None:
        """All together; if that fails, one at a time; what fails alone is parked."""
        try:
            await self.retry(lambda: handler(group), f"{self.name} poll of {len(group)}")
            self._count(group)
            return
        except Exception:
            log.warning(
                "set-wise handling failed; handling events one at a time",
                extra={"consumer": self.name, "size": len(group)},
                exc_info=True,
            )
        for item in group:
            try:
                await self.retry(lambda item=item: handler([item]), f"{self.name} {item[1].type}")  # type: ignore[misc]
                self._count([item])
            except Exception as exc:
                log.exception("handler failed alone", extra={"event_id": item[1].id, "type": item[1].type})
                await self._park(item[0], item[1], exc)

    def _count(self, group: Sequence[Decoded]) -> None:
        for _, env in group:
            metrics.EVENTS_HANDLED.labels(self.name, env.type).inc()

    async def _park(self, event: Event, env: Envelope, exc: Exception) -> None:
        await self.dead_letter_env(env, f"handler error: {type(exc).__name__}: {exc}")
        if self.on_parked is not None:
            try:
                await self.on_parked(event, env, exc)
            except Exception:  # noqa: BLE001 - the event is parked already; say so and go on
                log.exception("on_parked failed", extra={"consumer": self.name, "event_id": env.id})

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
