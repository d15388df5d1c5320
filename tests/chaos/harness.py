"""The chaos suite's own world: an embedded PostgreSQL, a broker (the embedded one, or a local
Apache Kafka cluster) and the four services as processes (so each can be killed and restarted), an org of field users, a steady load of devices
editing offline plus server writes, and the invariant checks run after every fault."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from offsync_device.client import Device, SyncRefused
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, DEVICE_AUDIENCE, issue_token
from offsync_shared.doorbell import ring_now
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.embedded import EMBEDDED_BROKER_ENV, EmbeddedBroker, EmbeddedPostgres, free_port, rmtree
from offsync_stack.infra import Infra
from offsync_stack.kafka import KafkaCluster
from offsync_stack.processes import SERVICES, ServiceGroup
from offsync_stack.testing import InfraEnv, eventually, make_env

ROOT_BU = "00000000-0000-0000-0000-000000000100"
SERVICE_NAMES = tuple(s.name for s in SERVICES)
SPECS = {s.name: s for s in SERVICES}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)}"}


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


# ---------------------------------------------------------------------------- the stack ----


@dataclass
class ChaosStack:
    """Infrastructure and services this suite owns outright, so it may restart any of them."""

    root: Path
    pg: EmbeddedPostgres | None
    broker: EmbeddedBroker | None
    env: InfraEnv
    group: ServiceGroup
    ports: dict[str, int]
    kafka: KafkaCluster | None = None
    ws_override: str | None = None  # devices connect here instead (a load balancer)

    @classmethod
    async def on_infra(cls, infra: Infra, extra_env: dict[str, str]) -> ChaosStack:
        """The four services on the session's infrastructure (a fresh database and topic
        prefix); the infrastructure itself is not this stack's to restart."""
        root = Path(tempfile.mkdtemp(prefix="offsync-stack-"))
        env = await make_env(infra, "stack")
        group = ServiceGroup(
            env={
                **env.as_env(),
                "OFFSYNC_LOG_LEVEL": os.environ.get("OFFSYNC_CHAOS_LOG_LEVEL", "WARNING"),
                **extra_env,
            },
            log_dir=root / "logs",
        )
        ports = {name: free_port() for name in SERVICE_NAMES}
        s = cls(root, None, None, env, group, ports)
        for name in SERVICE_NAMES:
            group.start(SPECS[name], ports[name])
        try:
            await asyncio.to_thread(group.wait_ready, 90)
        except BaseException:
            await asyncio.to_thread(group.stop_all)
            raise
        return s

    @classmethod
    async def start(cls, extra_env: dict[str, str], kafka_brokers: int = 0) -> ChaosStack:
        """``kafka_brokers`` > 0: on a local Apache Kafka cluster of that many nodes instead of
        the embedded broker."""
        root = Path(tempfile.mkdtemp(prefix="offsync-chaos-"))
        pg = EmbeddedPostgres(root / "pg")
        broker: EmbeddedBroker | None = None
        kafka: KafkaCluster | None = None
        await asyncio.to_thread(pg.start)
        if kafka_brokers:
            kafka = KafkaCluster(root / "kafka", size=kafka_brokers)
            try:
                await asyncio.to_thread(kafka.start)
            except BaseException:
                await asyncio.to_thread(kafka.stop)
                await asyncio.to_thread(pg.stop)
                raise
            bootstrap, broker_env = kafka.bootstrap, kafka.service_env()
        else:
            broker = EmbeddedBroker(root / "broker")
            await asyncio.to_thread(broker.start)
            bootstrap, broker_env = broker.bootstrap, dict(EMBEDDED_BROKER_ENV)
        conn = await asyncpg.connect(pg.dsn())
        await conn.execute('CREATE DATABASE "chaos"')
        await conn.close()
        env = InfraEnv(pg.dsn("chaos"), bootstrap, "chaos.", broker_env)
        group = ServiceGroup(
            env={
                **env.as_env(),
                "OFFSYNC_LOG_LEVEL": os.environ.get("OFFSYNC_CHAOS_LOG_LEVEL", "WARNING"),
                **extra_env,
            },
            log_dir=root / "logs",
        )
        ports = {name: free_port() for name in SERVICE_NAMES}
        s = cls(root, pg, broker, env, group, ports, kafka)
        for name in SERVICE_NAMES:
            group.start(SPECS[name], ports[name])
        await asyncio.to_thread(group.wait_ready, 90)
        return s

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    @property
    def sync_ws(self) -> str:
        if self.ws_override:
            return self.ws_override
        return self.url("sync-service").replace("http://", "ws://") + "/v1/sync"

    async def kill_and_restart(self, name: str) -> None:
        self.group.kill(name)  # SIGKILL: no drain, no goodbye
        self.group.start(SPECS[name], self.ports[name])

    async def wait_ready(self, timeout: float = 90) -> None:
        await asyncio.to_thread(self.group.wait_ready, timeout)

    async def restart_broker(self) -> None:
        """The embedded broker keeps everything in memory: this loses every topic and offset."""
        assert self.broker is not None
        await asyncio.to_thread(self.broker.stop)
        await asyncio.to_thread(self.broker.start)

    async def restart_postgres(self) -> None:
        assert self.pg is not None
        proc = self.pg.proc
        assert proc is not None
        proc.send_signal(signal.SIGINT)  # fast shutdown: open sessions are cut, not waited for
        await asyncio.to_thread(proc.wait, 30)
        self.pg.proc = None
        await asyncio.to_thread(self.pg.start)

    async def not_ready(self) -> list[str]:
        bad = []
        async with httpx.AsyncClient(timeout=2) as c:
            for name in SERVICE_NAMES:
                try:
                    r = await c.get(f"{self.url(name)}/readyz")
                    if r.status_code != 200:
                        bad.append(f"{name}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    bad.append(f"{name}: {type(exc).__name__}")
        return bad

    async def all_ready(self) -> bool:
        return not await self.not_ready()

    async def stop(self) -> None:
        await asyncio.to_thread(self.group.stop_all)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
        if self.kafka is not None:
            await asyncio.to_thread(self.kafka.stop)
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
        if os.environ.get("OFFSYNC_CHAOS_KEEP") != "1":
            rmtree(self.root)


# ------------------------------------------------------------------------------- the org ----

USERS = [f"u{i}" for i in range(10)]
OUTSIDER = "ux"  # owns records but has no device: none of them may ever reach a device
BULK = "ubulk"  # many records: its device's initial download spans many pages
PROBE_RECORD = "probe-u0"
CROWD = [f"crowd{i}" for i in range(10)]  # the reconnect storm's users: many devices each, no server writes


async def setup_org(s: ChaosStack, bulk_records: int) -> None:
    async with (
        httpx.AsyncClient(base_url=s.url("profile-service"), headers=admin_headers(), timeout=30) as admin,
        httpx.AsyncClient(base_url=s.url("conflict-service"), headers=admin_headers(), timeout=60) as records,
    ):
        ok(await admin.patch("/v1/entities/account", json={"offline_enabled": True}))
        ok(
            await admin.post(
                "/v1/roles",
                json={
                    "id": "field",
                    "name": "Field worker",
                    "read_offline_profile": True,
                    "privileges": {"account": {"create": "user", "read": "user", "write": "user", "delete": "user"}},
                },
            )
        )
        for uid in [*USERS, OUTSIDER, BULK, *CROWD]:
            ok(
                await admin.post(
                    "/v1/users", json={"id": uid, "name": uid, "business_unit_id": ROOT_BU, "role_ids": ["field"]}
                )
            )
        ok(await admin.post("/v1/profiles", json={"id": "field", "name": "Field"}))
        ok(
            await admin.post(
                "/v1/profiles/field/items", json={"entity": "account", "filter": {"kind": "other", "user": True}}
            )
        )
        ok(await admin.post("/v1/profiles/field/users", json={"user_ids": [*USERS, OUTSIDER, BULK, *CROWD]}))
        ok(await admin.post("/v1/profiles/field/publish"))
        ok(
            await records.post(
                "/v1/records/account",
                json={  # written only by the recovery probe
                    "id": PROBE_RECORD,
                    "attributes": {"name": "probe 0"},
                    "owner_id": USERS[0],
                    "business_unit_id": ROOT_BU,
                },
            )
        )
        for uid in [*USERS, OUTSIDER, *CROWD]:
            for j in range(3):
                ok(
                    await records.post(
                        "/v1/records/account",
                        json={
                            "id": f"srv-{uid}-{j}",
                            "attributes": {"name": f"server {uid} {j}"},
                            "owner_id": uid,
                            "business_unit_id": ROOT_BU,
                        },
                    )
                )
        lines = "\n".join(
            json.dumps({"id": f"bulk-{i:05d}", "attributes": {"name": f"bulk {i}"}, "owner_id": BULK})
            for i in range(bulk_records)
        )
        ok(
            await records.post(
                "/v1/records/account/import", content=lines.encode(), headers={"Content-Type": "application/x-ndjson"}
            )
        )


# ----------------------------------------------------------------------------- devices ----


class TrackedDevice(Device):
    """An SDK device that also records, once per batch, which of its changes were applied."""

    def __init__(self, *args: Any, user: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.expected: dict[str, str] = {}  # record id -> the name this device last gave it
        self.applied_updates: dict[str, int] = defaultdict(int)
        self.applied_creates: dict[str, int] = defaultdict(int)
        self.applied_log: list[float] = []  # when each change was acknowledged as applied
        self.edits = 0

    def _on_frame(self, ws: Any, frame: p.ServerFrame, caught_up: bool) -> bool:
        if isinstance(frame, p.Result):
            rows = self.store._rows("batch_id = ?", (frame.batch_id,))  # empty when already answered
            by_seq = {r.seq: r for r in frame.results}
            now = time.monotonic()
            for i, ch in enumerate(rows):
                res = by_seq.get(i)
                if res is not None and res.status == "applied":
                    (self.applied_creates if ch.op == "create" else self.applied_updates)[ch.id] += 1
                    self.applied_log.append(now)
        return super()._on_frame(ws, frame, caught_up)

    def edit(self, rng: random.Random) -> None:
        self.edits += 1
        name = f"{self.device_id}-{self.edits}"
        if len(self.expected) < 4 or rng.random() < 0.05:
            rid = self.store.create("account", {"name": name})
        else:
            rid = rng.choice(sorted(self.expected))
            self.store.update("account", rid, {"name": name})
        self.expected[rid] = name


def device_token(user: str, device_id: str) -> str:
    return issue_token(DEV_JWT_SECRET, user, DEVICE_AUDIENCE, device_id=device_id, ttl_seconds=3 * 3600)


@dataclass
class Load:
    """Devices that stay connected and edit offline, plus an admin writing server records."""

    s: ChaosStack
    devices: list[TrackedDevice]
    edit_interval: float = 0.4
    server_interval: float = 0.1
    running: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    server_writes: list[float] = field(default_factory=list)
    server_failures: int = 0
    server_internal_errors: list[str] = field(default_factory=list)  # 5xx other than 503: never expected
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    async def start(cls, s: ChaosStack, tmp: Path, per_user: int = 2) -> Load:
        devices = [
            TrackedDevice(
                s.sync_ws,
                LocalStore(tmp / f"{u}-{k}.sqlite"),
                device_token(u, f"{u}-d{k}"),
                device_id=f"{u}-d{k}",
                user=u,
            )
            for u in USERS
            for k in range(per_user)
        ]
        load = cls(s, devices)
        for d in devices:
            load.tasks.append(asyncio.create_task(d.run(load.stop), name=f"run-{d.device_id}"))
        await eventually(load._all_connected, timeout=60, interval=0.1, message="every device connected")
        load.running.set()
        rng = random.Random(8)
        for d in devices:
            load.tasks.append(asyncio.create_task(load._edit_loop(d, random.Random(rng.random()))))
        load.tasks.append(asyncio.create_task(load._server_loop(random.Random(9))))
        return load

    async def _all_connected(self) -> bool:
        return all(d.report.checkpoints > 0 for d in self.devices)

    async def _edit_loop(self, d: TrackedDevice, rng: random.Random) -> None:
        await asyncio.sleep(rng.random() * self.edit_interval)  # spread the devices over the interval
        while not self.stop.is_set():
            await self.running.wait()
            d.edit(rng)
            await asyncio.sleep(self.edit_interval * (0.5 + rng.random()))  # pacing of a human editing

    async def _server_loop(self, rng: random.Random) -> None:
        async with httpx.AsyncClient(base_url=self.s.url("conflict-service"), headers=admin_headers(), timeout=5) as c:
            n = 0
            while not self.stop.is_set():
                await self.running.wait()
                n += 1
                uid = rng.choice([*USERS, OUTSIDER])
                rid = f"srv-{uid}-{rng.randrange(3)}"
                try:
                    r = await c.patch(f"/v1/records/account/{rid}", json={"attributes": {"name": f"server write {n}"}})
                    if r.status_code < 300:
                        self.server_writes.append(time.monotonic())
                    else:
                        self.server_failures += 1
                        if r.status_code >= 500 and r.status_code != 503:
                            self.server_internal_errors.append(f"{r.status_code} {r.text[:120]}")
                except httpx.HTTPError:
                    self.server_failures += 1  # the service or its database is down: the fault at work
                await asyncio.sleep(self.server_interval)

    def applied_between(self, t0: float, t1: float) -> int:
        return sum(1 for d in self.devices for t in d.applied_log if t0 <= t <= t1)

    async def close(self) -> None:
        self.stop.set()
        self.running.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# ------------------------------------------------------------------------- invariants ----


@dataclass
class Verdict:
    lost: int
    duplicates: int
    leaked: int  # records on a device its user may not read
    diverged: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.leaked or self.diverged or self.problems)


def device_rows(d: Device) -> dict[str, int]:
    return {rid: int(v) for rid, v in d.store.db.execute("SELECT id, version FROM records WHERE entity = 'account'")}


async def reference(conn: asyncpg.Connection, user: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT id, version FROM data.records WHERE entity = 'account' AND owner_type = 'user' AND owner_id = $1 AND NOT deleted",
        user,
    )
    return {r["id"]: r["version"] for r in rows}


async def bucket_checksums(conn: asyncpg.Connection, user: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT b.id, b.checksum FROM sync.user_buckets ub JOIN sync.buckets b ON b.id = ub.bucket_id WHERE ub.user_id = $1",
        user,
    )
    return {r["id"]: int(r["checksum"]) for r in rows}


async def quiesce_and_check(s: ChaosStack, devices: list[TrackedDevice], timeout: float = 90) -> Verdict:
    """With the load paused: every pending change answered, every device converged to its
    user's set (records and versions as in Postgres, checksums as in the bucket store), no
    outbox left behind; then count lost, duplicated and leaked changes."""
    problems: list[str] = []

    async def drained() -> bool:
        return not any(d.store.has_pending() for d in devices)

    try:
        await eventually(drained, timeout=timeout, interval=0.2, message="every offline change answered")
    except AssertionError as exc:
        problems.append(str(exc)[:200])
    conn = await asyncpg.connect(s.env.pg_dsn)
    try:

        async def outboxes_empty() -> bool:
            n = 0
            for schema in ("admin", "data", "sync"):
                if await conn.fetchval("SELECT to_regclass($1)", f"{schema}.outbox"):
                    n += await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL')
            return n == 0

        async def converged() -> bool:
            for d in devices:
                if device_rows(d) != await reference(conn, d.user):
                    return False
                server = await bucket_checksums(conn, d.user)
                if d.store.local_checksums(server) != server:
                    return False
            return True

        for check, what in ((outboxes_empty, "outboxes relayed"), (converged, "devices converged")):
            try:
                await eventually(check, timeout=timeout, interval=0.25, message=what)
            except AssertionError as exc:
                problems.append(str(exc)[:200])
        diverged = []
        for d in devices:
            ref = await reference(conn, d.user)
            mine = device_rows(d)
            if mine != ref:
                stale = sorted(k for k in set(ref) & set(mine) if ref[k] != mine[k])
                diverged.append(
                    f"{d.device_id}: missing {len(set(ref) - set(mine))}, extra {len(set(mine) - set(ref))}, "
                    f"stale {len(stale)}" + (f" ({await _stale_trail(conn, d, stale[0])})" if stale else "")
                )
        owners = {
            r["id"]: r["owner_id"]
            for r in await conn.fetch("SELECT id, owner_id FROM data.records WHERE entity = 'account'")
        }
        leaked = sum(1 for d in devices for rid in device_rows(d) if owners.get(rid) != d.user)
        lost = dup = 0
        for d in devices:
            for rid, name in d.expected.items():
                row = await conn.fetchrow(
                    "SELECT version, deleted, attributes FROM data.records WHERE entity = 'account' AND id = $1", rid
                )
                if row is None:
                    lost += 1
                    continue
                attrs = json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]
                want = d.applied_creates.get(rid, 0) + d.applied_updates.get(rid, 0)
                if row["version"] > want:
                    dup += row["version"] - want
                if row["version"] < want or attrs.get("name") != name:
                    lost += 1
            for c in d.store.conflicts():
                problems.append(f"{d.device_id}: {c.status} {c.code} {c.message}"[:200])
        return Verdict(lost, dup, leaked, diverged, problems[:10])
    finally:
        await conn.close()


async def probe(s: ChaosStack, devices: list[TrackedDevice], n: int, timeout: float) -> float:
    """A server write that must reach a connected device, and an offline change that must come
    back applied: the whole pipeline (API, outbox, broker, every consumer, gateway) works."""
    t0 = time.monotonic()
    d = devices[0]
    rid = PROBE_RECORD
    name = f"probe {n}"

    async def server_write() -> bool:
        try:
            async with httpx.AsyncClient(headers=admin_headers(), timeout=5) as c:
                r = await c.patch(
                    f"{s.url('conflict-service')}/v1/records/account/{rid}", json={"attributes": {"name": name}}
                )
                return r.status_code < 300
        except httpx.HTTPError:
            return False

    await eventually(server_write, timeout=timeout, interval=0.2, message="records API write")
    try:
        await eventually(
            lambda: _has(d, rid, name), timeout=timeout, interval=0.05, message="server write reached the device"
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; pipeline: {await pipeline_state(s, rid)}; device cursor {d.store.cursor} "
            f"connections {d.report.connections} errors {d.report.errors[-2:]}"
        ) from None
    before = sum(d.applied_updates.values()) + sum(d.applied_creates.values())
    rng = random.Random(n)
    d.edit(rng)
    await eventually(lambda: _count_above(d, before), timeout=timeout, interval=0.05, message="offline change applied")
    try:
        await eventually(s.all_ready, timeout=timeout, interval=0.1, message="every service ready")
    except AssertionError:
        raise AssertionError(f"not ready: {await s.not_ready()}") from None
    return time.monotonic() - t0


async def pipeline_state(s: ChaosStack, rid: str) -> dict[str, Any]:
    """Where a record change stopped: its version in data, in the bucket store, outbox sizes."""
    conn = await asyncpg.connect(s.env.pg_dsn)
    try:
        return {
            "buckets": [
                dict(r)
                for r in await conn.fetch(
                    "SELECT b.id, b.last_op_id FROM sync.user_buckets ub JOIN sync.buckets b ON b.id = ub.bucket_id "
                    "WHERE ub.user_id = (SELECT owner_id FROM data.records WHERE entity = 'account' AND id = $1)",
                    rid,
                )
            ],
            "data_version": await conn.fetchval(
                "SELECT version FROM data.records WHERE entity = 'account' AND id = $1", rid
            ),
            "index_version": await conn.fetchval(
                "SELECT version FROM sync.record_index WHERE entity = 'account' AND record_id = $1", rid
            ),
            "outboxes": {
                sch: await conn.fetchval(f'SELECT count(*) FROM "{sch}".outbox WHERE published_at IS NULL')
                for sch in ("admin", "data", "sync")
                if await conn.fetchval("SELECT to_regclass($1)", f"{sch}.outbox")
            },
        }
    finally:
        await conn.close()


async def _stale_trail(conn: asyncpg.Connection, d: TrackedDevice, rid: str) -> str:
    """Where a stale record's newer version stopped: data, record index, each bucket's op, the
    device's own version and cursor."""
    ops = await conn.fetch(
        "SELECT bucket_id, op_id, op, version FROM sync.bucket_ops WHERE entity = 'account' AND record_id = $1", rid
    )
    data = await conn.fetchval("SELECT version FROM data.records WHERE entity = 'account' AND id = $1", rid)
    index = await conn.fetchval(
        "SELECT version FROM sync.record_index WHERE entity = 'account' AND record_id = $1", rid
    )
    mine = d.store.db.execute("SELECT version FROM records WHERE entity = 'account' AND id = ?", (rid,)).fetchone()
    held = [(o["bucket_id"], o["op_id"], o["op"], o["version"]) for o in ops]
    return f"{rid}: data v{data}, index v{index}, ops {held}, device v{mine[0] if mine else None} at cursor {d.store.cursor}"


async def _has(d: Device, rid: str, name: str) -> bool:
    return (d.store.get("account", rid) or {}).get("name") == name


async def _count_above(d: TrackedDevice, before: int) -> bool:
    return sum(d.applied_updates.values()) + sum(d.applied_creates.values()) > before


# ------------------------------------------------------------------------------ faults ----


async def replay_everything_twice_shuffled(s: ChaosStack) -> int:
    """Re-produce every message every topic holds, shuffled and each to a random partition: every
    event is delivered (at least) twice and reordered across partitions."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from offsync_shared.topics import ALL_TOPICS

    prefix = s.env.topic_prefix
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.env.kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    messages: list[tuple[str, bytes | None, bytes | None]] = []
    partitions: dict[str, int] = {}
    try:
        await consumer.topics()  # loads the cluster metadata partitions_for_topic answers from
        tps = []
        for t in ALL_TOPICS:
            name = t.full(prefix)
            parts = consumer.partitions_for_topic(name) or set()
            partitions[name] = len(parts)
            tps += [TopicPartition(name, i) for i in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 30
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset < ends[tp]:
                        messages.append((tp.topic, r.key, r.value))
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        try:
            await consumer.stop()
        except asyncio.CancelledError:  # aiokafka's group-less coordinator leaks its own cancellation on stop
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
    random.Random(7).shuffle(messages)
    producer = AIOKafkaProducer(bootstrap_servers=s.env.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        rng = random.Random(11)
        for topic, key, value in messages:
            await producer.send(topic, value, key=key, partition=rng.randrange(max(1, partitions[topic])))
        await producer.flush()
    finally:
        await producer.stop()
    # Produced behind the services' backs: ring their doorbell, as their own producers do, so
    # consumers paused at rest read it now rather than at their safety net.
    conn = await asyncpg.connect(s.env.pg_dsn)
    try:
        await ring_now(conn, partitions)
    finally:
        await conn.close()
    return len(messages)


async def drop_connections(devices: list[TrackedDevice], seconds: float) -> int:
    """Abort device sockets without a close handshake, preferring devices with a batch in flight
    (mid-upload)."""
    rng = random.Random(5)
    dropped = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        inflight = [d for d in devices if d.ws is not None and d.inflight is not None]
        pool = inflight or [d for d in devices if d.ws is not None]
        if pool:
            d = rng.choice(pool)
            if d.ws is not None and d.ws.transport is not None:
                d.ws.transport.abort()
                dropped += 1
        await asyncio.sleep(0.1)  # the fault's own pace: one drop every 100 ms
    return dropped


async def interrupted_download(s: ChaosStack, tmp: Path, drops: int) -> tuple[int, int, int]:
    """A fresh device of the bulk user whose connection is cut mid-download (up to ``drops``
    times); returns (cuts, connections used, records held) once it has caught up."""
    did = f"{BULK}-{uuid.uuid4().hex[:6]}"
    d = TrackedDevice(s.sync_ws, LocalStore(tmp / f"{did}.sqlite"), device_token(BULK, did), device_id=did, user=BULK)
    # Two pages (of 200) held per transaction: the progress that triggers a cut comes once they
    # are stored, still mid-download (the default, 10,000 ops, would hold the whole download).
    d.hold_ops = 400
    cut = 0
    cut_on = 0  # the connection last cut: the pages stored together report progress one by one

    def on_progress(done: int, total: int) -> None:
        nonlocal cut, cut_on
        if cut < drops and 0 < done < total and cut_on != d.report.connections and d.ws is not None:
            if d.ws.transport is not None:
                cut += 1
                cut_on = d.report.connections
                d.ws.transport.abort()

    d.on_progress = on_progress
    try:
        await d.sync(timeout=90, max_attempts=drops + 5)
    except SyncRefused as exc:
        raise AssertionError(f"bulk device refused: {exc}") from None
    assert cut >= 1, "the download was never cut"
    conn = await asyncpg.connect(s.env.pg_dsn)
    try:
        ref = await reference(conn, BULK)
    finally:
        await conn.close()
    assert device_rows(d) == ref, "the interrupted download converged to the bulk user's set"
    d.store.close()
    return cut, d.report.connections, len(ref)


# ------------------------------------------------------------------- reconnect storm ----


def fleet_specs(n: int) -> list[tuple[str, str, str]]:
    """``n`` devices of the crowd users, in memory: not individually tracked, and apart from the
    load's users so the storm is the only thing they see (the load keeps running beside it)."""
    return [(f"fleet-{i:04d}", fleet_user(f"fleet-{i:04d}"), ":memory:") for i in range(n)]


def fleet_user(device_id: str) -> str:
    return CROWD[int(device_id.rsplit("-", 1)[1]) % len(CROWD)]


async def open_fleet(s: ChaosStack, n: int) -> Any:
    """``n`` SDK devices in two worker processes of their own (``offsync_bench.fleet``), all
    connected and live."""
    from offsync_bench.fleet import Fleet

    fleet = Fleet(s.sync_ws, DEV_JWT_SECRET, processes=2)
    try:
        opened = await fleet.open(fleet_specs(n), timeout=180)
    except BaseException:
        await fleet.stop()
        raise
    if opened["failed"]:
        await fleet.stop()
        raise AssertionError(f"{opened['failed']} of {n} fleet devices did not connect: {opened['errors']}")
    return fleet


async def reconnect_storm(s: ChaosStack, fleet: Any, create_every: int, timeout: float) -> dict[str, Any]:
    """Every fleet device's socket is aborted at once; each reconnects by itself (SDK backoff,
    first retry within 0.2 s), uploading an offline create on every ``create_every``-th device,
    while the server changes every record of the crowd (so each device has news to fetch)."""
    async with httpx.AsyncClient(base_url=s.url("conflict-service"), headers=admin_headers(), timeout=30) as c:

        async def server_writes() -> None:
            for uid in CROWD:
                for j in range(3):
                    ok(
                        await c.patch(
                            f"/v1/records/account/srv-{uid}-{j}", json={"attributes": {"name": f"storm {uid} {j}"}}
                        )
                    )

        writes = asyncio.create_task(server_writes())
        parts = await fleet.all("drop", create_every=create_every, entity="account", timeout=timeout)
        await writes
    return {
        "devices": sum(r["devices"] for r in parts),
        "behind": sum(r["behind"] for r in parts),
        "seconds": max(r["seconds"] for r in parts),
        "created": {k: v for r in parts for k, v in r["created"].items()},
    }


async def check_fleet(s: ChaosStack, fleet: Any, created: dict[str, str], timeout: float) -> Verdict:
    """The fleet's invariants: each offline create applied exactly once (version 1, nothing left
    pending or in conflict), no device holds a record its user may not read, every device holds
    exactly its user's records at the server's versions."""
    users: dict[str, str] = {}
    conn = await asyncpg.connect(s.env.pg_dsn)
    try:

        async def state() -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
            held = {did: v for part in await fleet.all("rows", entity="account") for did, v in part.items()}
            users.update({d: fleet_user(d) for d in held})
            refs = {u: await reference(conn, u) for u in set(users.values())}
            return held, refs

        async def converged() -> bool:
            held, refs = await state()
            return all(v["rows"] == refs[users[d]] and not v["pending"] for d, v in held.items())

        problems: list[str] = []
        try:
            await eventually(converged, timeout=timeout, interval=0.5, message="fleet devices converged")
        except AssertionError as exc:
            problems.append(str(exc)[:200])
        held, refs = await state()
        diverged = [
            f"{d}: missing {len(set(refs[users[d]]) - set(v['rows']))}, extra {len(set(v['rows']) - set(refs[users[d]]))}"
            for d, v in held.items()
            if v["rows"] != refs[users[d]]
        ][:5]
        problems += [f"{d}: {v['conflicts']} conflicts" for d, v in held.items() if v["conflicts"]][:5]
        owners = {
            r["id"]: r["owner_id"]
            for r in await conn.fetch("SELECT id, owner_id FROM data.records WHERE entity = 'account'")
        }
        leaked = sum(1 for d, v in held.items() for rid in v["rows"] if owners.get(rid) != users[d])
        versions = {
            r["id"]: r["version"]
            for r in await conn.fetch(
                "SELECT id, version FROM data.records WHERE entity = 'account' AND id = ANY($1::text[])",
                list(created.values()),
            )
        }
        lost = sum(1 for rid in created.values() if rid not in versions)
        dup = sum(v - 1 for v in versions.values() if v > 1)
        return Verdict(lost, dup, leaked, diverged, problems)
    finally:
        await conn.close()
