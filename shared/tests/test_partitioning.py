"""offsync_shared.partitioning against aiokafka's own murmur2 and DefaultPartitioner: a producer
that places its messages itself must put each key where every other Kafka client puts it."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from offsync_shared import partitioning


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_murmur2_is_aiokafkas(data: bytes) -> None:
    assert partitioning.murmur2(data) == murmur2(data)


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=60), partitions=st.integers(1, 64))
def test_partition_is_the_default_partitioners(key: str, partitions: int) -> None:
    ids = list(range(partitions))
    k = key.encode()
    assert partitioning.partition_for(k, partitions) == DefaultPartitioner()(k, ids, ids)


def test_java_clients_vectors() -> None:
    # Kafka's own test vectors for Utils.murmur2 (UtilsTest.testMurmur2), as signed 32-bit ints.
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, signed in cases.items():
        assert partitioning.murmur2(data) == signed & 0xFFFFFFFF
