"""Two publish workers in one consumer group split the partitions; when one stops mid-stream the
other takes over its partitions and the bucket store still equals the reference, with no
duplicate or lost ops."""

from __future__ import annotations

import asyncio

import pytest
from publish_harness import harness
from test_publish_flow import ACCOUNTS, ITEMS_V1, seed_org

from offsync_shared.task_stop import stop_tasks
from offsync_stack.testing import InfraEnv, eventually
from publish_service.worker import PublishWorker

pytestmark = pytest.mark.integration


async def test_second_worker_takes_over_partitions(fresh_env: InfraEnv) -> None:
    async with harness(fresh_env) as h:
        other = PublishWorker(
            h.pool, h.producer, fresh_env.kafka_bootstrap, fresh_env.topic_prefix, **fresh_env.group_timeouts
        )
        other_task = asyncio.create_task(other.run())

        async def split() -> bool:  # a real Kafka may form the group with one member first
            c1, c2 = h.worker.loop.consumer, other.loop.consumer
            return bool(c1 and c2 and c1.assignment() and c2.assignment())

        await eventually(split, timeout=60, message="both workers own partitions")
        async with h.pool.acquire() as c:
            await seed_org(c)
        await h.publish("P", 1, ITEMS_V1, ["u1", "u2", "u3"])
        for i in range(40):
            rid, owner, bu = ACCOUNTS[i % len(ACCOUNTS)]
            await h.put_record("account", f"{rid}-{i}", owner=owner, bu=bu, attrs={"n": i})

        async def both_worked() -> bool:
            return h.worker.loop.processed + other.loop.processed >= h.sent

        await eventually(both_worked, timeout=30, message="both workers caught up")
        assert h.worker.loop.processed > 0 and other.loop.processed > 0  # the group split the partitions
        await h.assert_matches_reference()

        await stop_tasks([other_task])  # the second worker goes away; its partitions move to the first
        before = h.worker.loop.processed + other.loop.processed
        for i in range(40):
            rid, owner, bu = ACCOUNTS[(i + 1) % len(ACCOUNTS)]
            await h.put_record("account", f"{rid}-{i}", owner=owner, bu=bu, attrs={"n": -i})

        async def first_took_over() -> bool:
            return h.worker.loop.processed + other.loop.processed >= before + 40

        await eventually(first_took_over, timeout=45, message="remaining worker handled every partition")
        await h.assert_matches_reference()
        async with h.pool.acquire() as c:
            assert await c.fetchval("SELECT count(*) = count(DISTINCT op_id) FROM sync.bucket_ops")
