"""The local Apache Kafka cluster of ``make test-kafka`` stays fit for a whole session: a test's
topics are deleted when its env is released (every node kept a replica of each, and 2,000
partitions filled a node's heap), and a node that stopped on its own is started again before
the next test, with the end of its log reported (CI, 2026-12-08: one node down failed 144 tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from offsync_stack.infra import Infra
from offsync_stack.testing import eventually

pytestmark = [pytest.mark.integration, pytest.mark.kafka]


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_released_topics_are_deleted_and_no_other(infra: Infra) -> None:
    mine, other = f"rel{uuid.uuid4().hex[:8]}.", f"keep{uuid.uuid4().hex[:8]}."
    names = [f"{mine}a", f"{mine}b", f"{other}a"]
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, 2, 1) for n in names])
    finally:
        await admin.close()
    await eventually(lambda: _has(infra, set(names)), timeout=30, message="the topics to be listed")

    await asyncio.to_thread(infra.release_topics, mine)

    async def only_other_left() -> bool:
        have = await _topics(infra.kafka_bootstrap)
        return f"{other}a" in have and not any(t.startswith(mine) for t in have)

    await eventually(only_other_left, timeout=30, message=f"{mine}* deleted, {other}a kept")
    await asyncio.to_thread(infra.release_topics, other)


async def _has(infra: Infra, names: set[str]) -> bool:
    return names <= await _topics(infra.kafka_bootstrap)


async def test_a_node_that_died_is_started_again_and_its_end_reported(infra: Infra) -> None:
    cluster = infra.kafka
    assert cluster is not None
    victim = cluster.nodes[-1]
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)  # from outside, as the OOM killer or a crash would
    await asyncio.to_thread(victim.proc.wait, 30)

    reports = await asyncio.to_thread(cluster.revive)

    assert len(reports) == 1
    assert f"Kafka node {victim.node_id} exited with status {-signal.SIGKILL}" in reports[0]
    assert victim.running
    assert await asyncio.to_thread(cluster.revive) == []  # nothing else to do
    # The next tests start on a whole cluster again.
    await asyncio.to_thread(cluster.wait_in_sync, 120)
