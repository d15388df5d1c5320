"""Device batches through the real topic, consumer group and outbox relay: failure modes 2
(duplicate batch after a lost answer), 3 (poison change / poison batch), 7 (redelivery after a
rebalance), and two workers sharing the load with one killed mid-way."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from conflict_org import ALICE, BOB, Org, batch, change, migrated_pool, read_record_changes, read_topic, seed

from conflict_service.applier import topics_for
from conflict_service.worker import BatchWorker
from offsync_shared import bus, db
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.outbox import OutboxRelay
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import DEVICE_BATCHES
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration


@dataclass
class Harness:
    env: InfraEnv
    org: Org
    producer: bus.Producer
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    workers: dict[str, BatchWorker] = field(default_factory=dict)

    @property
    def topics(self) -> Any:
        return topics_for(self.env.topic_prefix)

    async def send(self, *batches: BatchUploaded) -> None:
        topic = DEVICE_BATCHES.full(self.env.topic_prefix)
        await self.producer.send_many([(topic, b.device_id, b.envelope(b.device_id).encode()) for b in batches])

    async def start_worker(self, name: str) -> BatchWorker:
        w = BatchWorker(
            self.org.pool,
            self.producer,
            self.env.kafka_bootstrap,
            self.env.topic_prefix,
            max_records=20,
            **self.env.group_timeouts,
        )
        await w.start()
        self.workers[name] = w
        self.tasks[name] = asyncio.create_task(w.run())
        return w

    async def kill_worker(self, name: str) -> None:
        """Stop a worker abruptly: its in-flight transaction rolls back, uncommitted offsets stay."""
        await stop_tasks([self.tasks.pop(name)])
        await self.workers.pop(name).stop()

    async def applied_batches(self) -> int:
        return int(await self.org.pool.fetchval("SELECT count(*) FROM data.batches"))


@pytest_asyncio.fixture
async def harness(fresh_env: InfraEnv) -> AsyncIterator[Harness]:
    await bus.ensure_topics(fresh_env.kafka_bootstrap, fresh_env.topic_prefix, 4)
    pool = await migrated_pool(fresh_env.pg_dsn, max_size=12)
    org = await seed(pool)
    producer = bus.Producer(fresh_env.kafka_bootstrap)
    await producer.start()
    h = Harness(fresh_env, org, producer)
    h.tasks["relay"] = asyncio.create_task(OutboxRelay(pool, "data", producer, poll_interval=0.2).run())
    try:
        yield h
    finally:
        # Not a plain cancel + gather: a lost cancellation left a task running and this teardown
        # waiting for ever (runtime.stop_tasks; seen in a parallel make test).
        await stop_tasks(list(h.tasks.values()))
        for w in h.workers.values():
            await w.stop()
        await producer.stop()
        await pool.close()


async def test_batches_through_the_topic_duplicate_and_poison(harness: Harness) -> None:
    h = harness
    b1 = batch(
        ALICE, "d1", change(0, "create", "account", "a1", name="A"), change(1, "update", "account", "a1", 1, city="x")
    )
    # Failure mode 3: one change that always fails (required field missing) is rejected alone.
    b2 = batch(
        ALICE, "d1", change(0, "create", "contact", "c1", phone="1"), change(1, "update", "account", "a1", 2, city="y")
    )
    # A batch the database refuses outright (NUL in a string): answered, never blocks what follows.
    poison = batch(ALICE, "d1", change(0, "create", "account", "p1", name="bad\u0000name"))
    b3 = batch(ALICE, "d1", change(0, "update", "account", "a1", 3, city="z"))
    # Failure mode 2: b1 again after its answer was lost.
    await h.send(b1, b2, b1, poison, b3)
    await h.start_worker("w1")
    answers = await read_topic(h.env.kafka_bootstrap, h.topics.batch_results, 5, timeout=30)
    by_id: dict[str, list[list[dict[str, Any]]]] = {}
    for a in answers:
        by_id.setdefault(a["payload"]["batch_id"], []).append(a["payload"]["results"])
    assert by_id[b1.batch_id][0] == by_id[b1.batch_id][1]
    assert [r["status"] for r in by_id[b2.batch_id][0]] == ["rejected", "applied"]
    assert by_id[poison.batch_id][0][0]["code"] == "unprocessable"
    assert by_id[b3.batch_id][0][0]["status"] == "applied"
    a1 = await h.org.record("account", "a1")
    assert a1 is not None and (a1["version"], a1["attributes"]["city"]) == (4, "z")
    changes = await read_record_changes(h.env.kafka_bootstrap, h.topics.records, 4, distinct=True)  # at least once
    assert sorted(c["version"] for c in changes) == [1, 2, 3, 4]


async def test_redelivery_after_rebalance_applies_nothing_twice(harness: Harness) -> None:
    """Failure mode 7: a worker applied batches but its offsets were never committed; the next
    owner of the partitions gets every event again and must not apply any twice."""
    h = harness
    batches = [
        batch(
            ALICE,
            f"d{i % 4}",
            change(0, "create", "account", f"a{i}", name="n"),
            change(1, "update", "account", f"a{i}", 1, city="c"),
        )
        for i in range(12)
    ]
    await h.send(*batches)
    w1 = await h.start_worker("w1")
    assert w1.loop.consumer is not None

    async def commit_never(*_: Any) -> None:
        # The commit is lost, not stuck: the worker goes on (a real Kafka hands the 12 batches
        # over in several polls, and a worker blocked in its first commit would apply only some).
        return None

    w1.loop.consumer.commit = commit_never  # fault injection: lost commits

    async def all_applied() -> bool:
        return await h.applied_batches() == 12

    await eventually(all_applied, timeout=30, message="first delivery applied")
    await h.kill_worker("w1")
    w2 = await h.start_worker("w2")

    async def redelivered() -> bool:
        return w2.loop.processed >= 1

    await eventually(redelivered, timeout=30, message="redelivery to the second worker")
    # Every batch is answered, by w1 or (its answer stored) again by w2: w1 may have been killed
    # between its commit and the send of its last poll's answers, which w2 then sends on redelivery.
    ids = {b.batch_id for b in batches}
    answers = await read_topic(
        h.env.kafka_bootstrap,
        h.topics.batch_results,
        12,
        timeout=30,
        until=lambda got: {a["payload"]["batch_id"] for a in got} >= ids,
    )
    assert {a["payload"]["batch_id"] for a in answers} == ids
    versions = await h.org.pool.fetch("SELECT id, version FROM data.records")
    assert {r["version"] for r in versions} == {2} and len(versions) == 12
    changes = await read_record_changes(h.env.kafka_bootstrap, h.topics.records, 24)
    assert max(Counter((c["id"], c["version"]) for c in changes).values()) == 1


async def test_two_workers_share_the_load_and_one_dies_mid_way(harness: Harness) -> None:
    h = harness
    devices, per_device, changes = 16, 6, 5
    sent: list[BatchUploaded] = []
    for round_ in range(per_device):
        for d in range(devices):
            user = ALICE if d % 2 else BOB
            rid = f"r{d}"
            if round_ == 0:
                chs = [change(0, "create", "account", rid, name="n")]
                chs += [change(i, "update", "account", rid, i, city=str(i)) for i in range(1, changes)]
            else:
                base = round_ * changes
                chs = [change(i, "update", "account", rid, base + i, city=f"{round_}.{i}") for i in range(changes)]
            sent.append(batch(user, f"dev{d}", *chs))
    await h.send(*sent[: len(sent) // 2])
    await h.start_worker("w1")
    w2 = await h.start_worker("w2")

    async def some_progress() -> bool:
        return await h.applied_batches() >= len(sent) // 4

    await eventually(some_progress, timeout=40, message="both workers started applying")
    await h.send(*sent[len(sent) // 2 :])
    await h.kill_worker("w1")  # mid-way: whatever it held goes to w2 after the rebalance

    async def all_applied() -> bool:
        return await h.applied_batches() == len(sent)

    await eventually(all_applied, timeout=60, message="every batch applied once")
    rows = await h.org.pool.fetch("SELECT id, version, attributes FROM data.records ORDER BY id")
    assert len(rows) == devices
    assert all(r["version"] == per_device * changes for r in rows)  # every change applied exactly once, in order
    assert all(r["attributes"]["city"] == f"{per_device - 1}.{changes - 1}" for r in rows)
    results = await h.org.pool.fetch("SELECT results FROM data.batches")
    assert all(x["status"] == "applied" and x["code"] is None for r in results for x in r["results"])
    assert w2.loop.processed > 0


async def test_an_outage_in_the_one_at_a_time_fallback_is_waited_out(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that can never be applied sends the poll down the one-at-a-time path; the database
    going away there must not answer the good batch `unprocessable` (its changes would be lost)."""
    monkeypatch.setattr(db, "RETRY_FIRST_S", 0.0)
    h = harness
    w = BatchWorker(h.org.pool, h.producer, h.env.kafka_bootstrap, h.env.topic_prefix, **h.env.group_timeouts)
    poison = batch(ALICE, "d1", change(0, "create", "account", "p1", name="never"))
    good = batch(ALICE, "d1", change(0, "create", "account", "g1", name="fine"))
    real_apply, away_once = (
        w.applier.apply,
        [asyncpg.AdminShutdownError("terminating connection due to administrator command")],
    )

    async def apply(batches: Sequence[BatchUploaded]) -> list[BatchApplied]:  # fault injection around the real applier
        if poison in batches:
            raise ValueError("a batch this worker can never apply")
        if away_once:
            raise away_once.pop()  # the database shuts down just as the good batch is retried alone
        return await real_apply(batches)

    w.applier.apply = apply  # type: ignore[method-assign]
    await w.loop.handle_decoded([(poison, poison.envelope("d1")), (good, good.envelope("d1"))])
    answers = await read_topic(h.env.kafka_bootstrap, h.topics.batch_results, 2, timeout=30)
    first = {a["payload"]["batch_id"]: a["payload"]["results"][0] for a in answers}
    assert first[poison.batch_id]["code"] == "unprocessable"
    assert first[good.batch_id]["status"] == "applied"
    assert (await h.org.record("account", "g1")) is not None
