"""``bus.Producer.send_many`` builds its own record batches: against a real Kafka-protocol broker,
every message arrives once, each key in the partition aiokafka's own ``send`` gives it, and one
key's messages in the order given, also when a partition's share spans several batches."""

from __future__ import annotations

from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from offsync_shared import bus
from offsync_shared.topics import ADMIN
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration

KEYS = 40
PER_KEY = 60
VALUE_BYTES = 900  # 2,400 messages, ~2.2 MB: each of the 4 partitions' share spans two batches


async def test_send_many_places_keys_like_aiokafka_and_keeps_their_order(fresh_env: InfraEnv) -> None:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    topic = ADMIN.full(fresh_env.topic_prefix)
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    raw = AIOKafkaProducer(bootstrap_servers=fresh_env.kafka_bootstrap)
    await producer.start()
    await raw.start()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=fresh_env.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    try:
        # Interleaved keys, as an outbox poll has them; each value names its key and position.
        messages = [
            (topic, f"account:k{k}", f"{k}:{i}:".encode().ljust(VALUE_BYTES, b"x"))
            for i in range(PER_KEY)
            for k in range(KEYS)
        ]
        await producer.send_many(messages)
        # One marker per key through aiokafka's own per-message path (its DefaultPartitioner).
        expected_partition = {}
        for k in range(KEYS):
            meta = await raw.send_and_wait(topic, key=f"account:k{k}".encode(), value=f"{k}:marker:".encode())
            expected_partition[k] = meta.partition

        await consumer.start()
        seen: dict[int, list[tuple[int, str]]] = defaultdict(list)  # key -> (partition, position)
        total = len(messages) + KEYS

        async def all_read() -> bool:
            for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                for r in recs:
                    k, pos, _ = r.value.split(b":", 2)
                    seen[int(k)].append((tp.partition, pos.decode()))
            return sum(len(v) for v in seen.values()) >= total

        await eventually(all_read, timeout=60, message="every message read back")
        assert sum(len(v) for v in seen.values()) == total
        for k in range(KEYS):
            partitions = {p for p, _ in seen[k]}
            assert partitions == {expected_partition[k]}, f"key {k} in {partitions}"
            assert [pos for _, pos in seen[k]] == [*map(str, range(PER_KEY)), "marker"]
    finally:
        await consumer.stop()
        await raw.stop()
        await producer.stop()
