"""Upload benchmark for conflict-service: N devices each upload one batch of M offline changes
(10% of them conflicting) to the device-batches topic; measures the time until every answer is
on batch-results (changes/s) and the p99 batch acknowledgement latency.

Runs conflict-service as a real process on the embedded (or OFFSYNC_TEST_*) PostgreSQL + broker:
    .venv/bin/python bench/scripts/upload_conflict_service.py [--devices 200] [--changes 50] [--server-wins]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer

from offsync_shared import bus, db
from offsync_shared.events.device_batches import BatchUploaded, Change
from offsync_shared.topics import BATCH_RESULTS, DEVICE_BATCHES
from offsync_stack.embedded import free_port
from offsync_stack.infra import provide
from offsync_stack.processes import SERVICES, ServiceGroup


async def seed(dsn: str, devices: int, conflicting: int, server_wins: bool) -> None:
    pool = await db.create_pool(dsn)
    try:
        await db.migrate(pool, "admin", "profile_service.migrations")
        await db.migrate(pool, "data", "conflict_service.migrations")
        async with pool.acquire() as c:
            await c.execute(
                f"INSERT INTO admin.org_settings(org_id, conflict_detection) VALUES ('default', {str(server_wins).lower()})"
            )
            await c.execute("INSERT INTO admin.business_units(id, name) VALUES ('root', 'Root')")
            await c.execute(
                """INSERT INTO admin.roles(id, name, privileges) VALUES ('sales', 'sales',
                   '{"account": {"create": "user", "read": "user", "write": "user", "delete": "user"}}')"""
            )
            await c.executemany(
                "INSERT INTO admin.users(id, name, business_unit_id) VALUES ($1, $1, 'root')",
                [(f"u{i}",) for i in range(devices)],
            )
            await c.executemany(
                "INSERT INTO admin.user_roles VALUES ($1, 'sales')", [(f"u{i}",) for i in range(devices)]
            )
            await c.execute(
                """INSERT INTO admin.entities(logical_name, display_name, ownership, attributes) VALUES ('account', 'Account',
                   'user_or_team', '{"name": {"type": "string", "required": true}, "city": {"type": "string"},
                   "revenue": {"type": "decimal"}}')"""
            )
            # Records the devices will update from a stale version (version 2 on the server, base 1).
            await c.executemany(
                """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes, created_by)
                   VALUES ('account', $1, 2, $2, 'user', 'root', '{"name": "server"}', $2)""",
                [(f"old-{d}-{k}", f"u{d}") for d in range(devices) for k in range(conflicting)],
            )
    finally:
        await pool.close()


def make_batches(devices: int, changes: int, conflicting: int) -> list[BatchUploaded]:
    out = []
    for d in range(devices):
        chs = [
            Change(seq=k, op="update", entity="account", id=f"old-{d}-{k}", base_version=1, fields={"city": f"dev{d}"})
            for k in range(conflicting)
        ]
        chs += [
            Change(seq=k, op="create", entity="account", id=str(uuid.uuid4()), fields={"name": f"n{k}", "revenue": k})
            for k in range(conflicting, changes)
        ]
        out.append(
            BatchUploaded(
                batch_id=str(uuid.uuid4()), device_id=f"dev{d}", user_id=f"u{d}", changes=chs, received_at=time.time()
            )
        )
    return out


async def run(devices: int, changes: int, server_wins: bool) -> dict[str, object]:
    conflicting = max(1, changes // 10)
    with provide() as infra:
        dsn = await infra.create_database("bench")
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        await seed(dsn, devices, conflicting, server_wins)
        await bus.ensure_topics(infra.kafka_bootstrap, prefix, 4)
        env = {
            "OFFSYNC_ENV": "test",
            "OFFSYNC_PG_DSN": dsn,
            "OFFSYNC_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "OFFSYNC_TOPIC_PREFIX": prefix,
            "OFFSYNC_TOPIC_PARTITIONS": "4",
            "OFFSYNC_LOG_LEVEL": "WARNING",
        }
        group = ServiceGroup(env=env, log_dir=Path(tempfile.mkdtemp(prefix="offsync-bench-")))
        spec = next(s for s in SERVICES if s.name == "conflict-service")
        svc = group.start(spec, free_port())
        try:
            group.wait_ready(timeout=60)
            # Let the worker join its group before the clock starts (a join costs seconds here).
            async with httpx.AsyncClient() as client:
                await client.get(f"{svc.url}/readyz")
            results = AIOKafkaConsumer(
                BATCH_RESULTS.full(prefix),
                bootstrap_servers=infra.kafka_bootstrap,
                auto_offset_reset="latest",
                group_id=None,
            )
            await results.start()
            await results.getmany(timeout_ms=500)
            producer = bus.Producer(infra.kafka_bootstrap, linger_ms=5)
            await producer.start()
            # Warm-up batch: makes sure the consumer group has its partitions before timing.
            warm = make_batches(1, 1, 1)[0].model_copy(update={"device_id": "warm", "user_id": "u0", "changes": []})
            await producer.send_many([(DEVICE_BATCHES.full(prefix), "warm", warm.envelope("warm").encode())])
            while not any(m for ms in (await results.getmany(timeout_ms=200)).values() for m in ms):
                pass
            batches = make_batches(devices, changes, conflicting)
            sent_at: dict[str, float] = {}
            acked: dict[str, float] = {}
            conflicts = 0
            t0 = time.perf_counter()
            msgs = [(DEVICE_BATCHES.full(prefix), b.device_id, b.envelope(b.device_id).encode()) for b in batches]
            for b in batches:
                sent_at[b.batch_id] = t0
            await producer.send_many(msgs)
            deadline = time.perf_counter() + 120
            while len(acked) < len(batches) and time.perf_counter() < deadline:
                for ms in (await results.getmany(timeout_ms=200)).values():
                    now = time.perf_counter()
                    for m in ms:
                        payload = json.loads(m.value)["payload"]
                        if payload["batch_id"] in sent_at and payload["batch_id"] not in acked:
                            acked[payload["batch_id"]] = now
                            conflicts += sum(1 for r in payload["results"] if r["status"] == "conflict")
            elapsed = max(acked.values()) - t0 if acked else float("nan")
            lat = sorted((acked[b] - sent_at[b]) * 1000 for b in acked)
            await producer.stop()
            await results.stop()
            return {
                "status": "ok" if len(acked) == len(batches) else "failed",
                "devices": devices,
                "changes_per_batch": changes,
                "policy": "server_wins" if server_wins else "client_wins",
                "batches_acked": len(acked),
                "changes_per_s": round(devices * changes / elapsed),
                "p50_batch_ack_ms": round(lat[len(lat) // 2]),
                "p99_batch_ack_ms": round(lat[int(len(lat) * 0.99) - 1]),
                "conflicts": conflicts,
                "seconds": round(elapsed, 2),
                "cores": os.cpu_count(),
            }
        finally:
            group.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--server-wins", action="store_true")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.devices, args.changes, args.server_wins))))


if __name__ == "__main__":
    main()
