"""Faults of a replicated Apache Kafka under a steady load (``make test-kafka``): a 3-node KRaft
cluster (every node broker + controller), topics at replication factor 3 with
``min.insync.replicas=2``, producers ``acks=all``. One after the other on one stack: SIGKILL of
one broker then its restart, SIGKILL of the active controller, a rolling restart of all three,
and a consumer-group rebalance while device batches are being applied. After each, with the load
paused: every acknowledged offline change applied exactly once, no device holds a record its user
may not read, every device converged (records, versions and bucket checksums), no outbox left
behind. Prints the table docs/reliability.md quotes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from offsync_stack.embedded import free_port
from offsync_stack.testing import eventually
from tests.chaos.harness import SPECS, ChaosStack, Load, TrackedDevice, probe, quiesce_and_check, setup_org
from tests.chaos.test_chaos import Row, repair, table

pytestmark = [pytest.mark.chaos, pytest.mark.kafka]

BROKERS = 3
LOAD_BEFORE_FAULT_S = 3.0  # the load runs this long before each fault, so it hits the load mid-flight
DEGRADED_S = 5.0  # how long the load runs on two brokers before the killed one comes back
RECOVERY_TIMEOUT_S = 120.0


async def test_kafka_faults_under_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    s = await ChaosStack.start({"OFFSYNC_SYNC_PAGE_SIZE": "200"}, kafka_brokers=BROKERS)
    assert s.kafka is not None
    kafka = s.kafka
    rows: list[Row] = []
    load: Load | None = None
    try:
        await setup_org(s, bulk_records=300)
        load = await Load.start(s, tmp_path)
        n = 0

        async def run_fault(name: str, inject: Callable[[], Awaitable[str]]) -> None:
            nonlocal n
            assert load is not None
            n += 1
            await asyncio.sleep(LOAD_BEFORE_FAULT_S)  # load duration, not a wait for a condition
            t0 = time.monotonic()
            internal_before = len(load.server_internal_errors)
            try:
                note = await inject()
            except Exception as exc:  # the fault's own machinery failing is reported, not hidden
                note = f"FAIL inject: {type(exc).__name__}: {exc}"[:200]
            recovery: float | None
            try:
                await probe(s, load.devices, n, RECOVERY_TIMEOUT_S)
                recovery = time.monotonic() - t0
            except AssertionError as exc:
                recovery = None
                note = (note + f" FAIL {exc}")[:300].strip()
                await repair(s)
            t1 = time.monotonic()
            held = load.applied_between(t0, t1) / max(t1 - t0, 1e-3)
            load.running.clear()
            verdict = await quiesce_and_check(s, load.devices, timeout=RECOVERY_TIMEOUT_S)
            load.running.set()
            internal = load.server_internal_errors[internal_before:]
            if internal:
                verdict.problems.append(
                    f"records API answered {len(internal)} x 5xx other than 503, e.g. {internal[0]}"
                )
            if verdict.diverged or verdict.problems:
                note = (note + " FAIL " + "; ".join(verdict.problems + verdict.diverged))[:400].strip()
            rows.append(Row(name, held, recovery, verdict.lost, verdict.duplicates, verdict.leaked, note))

        async def baseline() -> str:
            return f"baseline on {BROKERS} brokers, RF {kafka.replication}, min.insync.replicas {kafka.min_insync}"

        await run_fault("none (baseline)", baseline)

        async def kill_one_broker() -> str:
            controller = await asyncio.to_thread(kafka.active_controller)
            victim = next(nd.node_id for nd in kafka.nodes if nd.node_id != controller)
            await asyncio.to_thread(kafka.kill_node, victim)
            await asyncio.sleep(DEGRADED_S)  # the load runs on two brokers meanwhile
            t = time.monotonic()
            await asyncio.to_thread(kafka.start_node, victim)
            await asyncio.to_thread(kafka.wait_in_sync)
            return f"broker {victim} (not the controller) killed, back and in sync {time.monotonic() - t:.1f} s after restart"

        await run_fault("SIGKILL one broker, then restart it", kill_one_broker)

        async def kill_controller() -> str:
            controller = await asyncio.to_thread(kafka.active_controller)
            await asyncio.to_thread(kafka.kill_node, controller)
            t = time.monotonic()

            async def new_leader() -> int | bool:
                try:
                    leader = await asyncio.to_thread(kafka.active_controller)
                except RuntimeError:
                    return False
                return leader if leader != controller else False

            elected = await eventually(new_leader, timeout=60, interval=0.1, message="a new active controller")
            took = time.monotonic() - t
            await asyncio.sleep(DEGRADED_S)  # the load runs under the new controller meanwhile
            await asyncio.to_thread(kafka.start_node, controller)
            await asyncio.to_thread(kafka.wait_in_sync)
            return f"controller {controller} killed; node {elected} took over in {took:.1f} s; {controller} restarted"

        await run_fault("SIGKILL the active controller", kill_controller)

        async def rolling_restart() -> str:
            took = []
            for nd in list(kafka.nodes):
                t = time.monotonic()
                await asyncio.to_thread(kafka.stop_node, nd.node_id)  # SIGTERM: controlled shutdown
                await asyncio.to_thread(kafka.start_node, nd.node_id)
                await asyncio.to_thread(kafka.wait_in_sync)
                took.append(time.monotonic() - t)
            return "each node stopped (SIGTERM), restarted, in sync before the next: " + ", ".join(
                f"{x:.0f} s" for x in took
            )

        await run_fault("rolling restart of all three brokers", rolling_restart)

        async def rebalance_mid_batch() -> str:
            assert load is not None
            extra = {"conflict-service": "conflict-service-2", "publish-service": "publish-service-2"}
            await eventually(lambda: _in_flight(load.devices), timeout=30, interval=0.01, message="a batch in flight")
            for svc, instance in extra.items():  # joining: both groups rebalance
                s.group.start(SPECS[svc], free_port(), instance=instance)
            await asyncio.to_thread(s.group.wait_ready, 90, list(extra.values()))
            await eventually(lambda: _in_flight(load.devices), timeout=30, interval=0.01, message="a batch in flight")
            for instance in extra.values():  # leaving mid-batch: rebalanced again
                await asyncio.to_thread(s.group.stop, instance)
            return "a second conflict-service and publish-service joined, then left, each while a device batch was in flight"

        await run_fault("consumer-group rebalance while a batch is mid-apply", rebalance_mid_batch)
    finally:
        if load is not None:
            await load.close()
        await s.stop()
        with capsys.disabled():
            print("\n" + table(rows, time.monotonic() - started))
    bad = [r for r in rows if not r.ok]
    assert not bad, "\n" + table(bad, time.monotonic() - started)


async def _in_flight(devices: list[TrackedDevice]) -> Any:
    return any(d.inflight is not None for d in devices)
