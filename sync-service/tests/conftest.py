"""Fixtures for sync-service tests: a real gateway (uvicorn, in-process, on a free port) over a
fresh database whose `sync`, `admin` and `data` schemas come from the owning services'
migrations, and a harness that writes bucket rows the way publish-service does and emits notify
events on the real broker. `StandInConflictService` answers uploaded batches: it is a stand-in
for conflict-service (being built in parallel), not the real thing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import pytest_asyncio
import uvicorn
from aiokafka import AIOKafkaConsumer

from offsync_shared import auth, bus, db
from offsync_shared.checksum import SQL_OP_HASH
from offsync_shared.doorbell import Doorbell
from offsync_shared.envelope import Envelope
from offsync_shared.events import decode
from offsync_shared.events.batch_results import BatchApplied, ChangeResult
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.events.sync_notify import BucketsAdvanced, UserBucketsChanged
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import BATCH_RESULTS, DEVICE_BATCHES, SYNC_NOTIFY
from offsync_stack.embedded import free_port
from offsync_stack.testing import InfraEnv, eventually, make_env, release_env
from sync_service import bucket_reads
from sync_service.__main__ import uvicorn_config
from sync_service.app import create_app
from sync_service.settings import Settings

HASH = SQL_OP_HASH.format(entity="o.entity", id="o.record_id", version="o.version")


class StandInConflictService:
    """STAND-IN for conflict-service: consumes offsync.device-batches.v1 from the real topic,
    applies changes to data.records (server wins on a stale base_version; entity 'poison' is
    always rejected), stores the answer in data.batches, produces BatchApplied. A batch id seen
    again is answered from data.batches, never applied twice."""

    def __init__(self, env: InfraEnv, pool: asyncpg.Pool, producer: bus.Producer) -> None:
        self.env = env
        self.pool = pool
        self.producer = producer
        self.applied: list[str] = []  # batch ids applied (first time only)
        self.seen: list[str] = []  # every batch id received
        self.hold = False  # when set: apply and store, but do not produce the answer
        self.lose = False  # when set: drop each batch unseen, as a broker that lost it would
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            DEVICE_BATCHES.full(self.env.topic_prefix),
            bootstrap_servers=self.env.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await self.consumer.start()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        if self.consumer:
            await self.consumer.stop()

    async def _run(self) -> None:
        assert self.consumer is not None
        async for rec in self.consumer:
            event = decode(Envelope.decode(rec.value))
            assert isinstance(event, BatchUploaded)
            if self.lose:
                continue
            self.seen.append(event.batch_id)
            results = await self._apply(event)
            if not self.hold:
                answer = BatchApplied(
                    batch_id=event.batch_id, device_id=event.device_id, user_id=event.user_id, results=results
                )
                await self.producer.send(
                    BATCH_RESULTS.full(self.env.topic_prefix), answer.envelope(key=event.device_id)
                )

    async def _apply(self, b: BatchUploaded) -> list[ChangeResult]:
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await conn.fetchval("SELECT results FROM data.batches WHERE batch_id = $1", b.batch_id)
            if stored is not None:
                return [ChangeResult.model_validate(r) for r in stored]
            out: list[ChangeResult] = []
            for c in sorted(b.changes, key=lambda c: c.seq):
                row = await conn.fetchrow(
                    "SELECT version, deleted, attributes FROM data.records WHERE entity = $1 AND id = $2",
                    c.entity,
                    c.id,
                )
                base = dict(seq=c.seq, entity=c.entity, id=c.id)
                if c.entity == "poison":
                    out.append(ChangeResult(**base, status="rejected", code="validation", message="poison entity"))
                elif c.op == "create":
                    if row is None:
                        await conn.execute(
                            "INSERT INTO data.records(entity, id, version, attributes, owner_id, owner_type) VALUES ($1, $2, 1, $3, $4, 'user')",
                            c.entity,
                            c.id,
                            c.fields,
                            b.user_id,
                        )
                        out.append(ChangeResult(**base, status="applied", version=1))
                    else:
                        out.append(ChangeResult(**base, status="applied", version=row["version"]))
                elif row is None:
                    out.append(ChangeResult(**base, status="rejected", code="not_found", message="no such record"))
                elif c.base_version != row["version"]:
                    out.append(
                        ChangeResult(
                            **base,
                            status="conflict",
                            version=row["version"],
                            record={
                                "version": row["version"],
                                "deleted": row["deleted"],
                                "attributes": row["attributes"],
                            },
                        )
                    )
                else:
                    v = row["version"] + 1
                    attrs = {**row["attributes"], **c.fields}
                    await conn.execute(
                        "UPDATE data.records SET version = $3, attributes = $4, deleted = $5 WHERE entity = $1 AND id = $2",
                        c.entity,
                        c.id,
                        v,
                        attrs,
                        c.op == "delete",
                    )
                    out.append(ChangeResult(**base, status="applied", version=v))
            await conn.execute(
                "INSERT INTO data.batches(batch_id, device_id, user_id, results) VALUES ($1, $2, $3, $4)",
                b.batch_id,
                b.device_id,
                b.user_id,
                [r.model_dump() for r in out],
            )
            self.applied.append(b.batch_id)
            return out


@dataclass
class Harness:
    env: InfraEnv
    settings: Settings
    pool: asyncpg.Pool
    producer: bus.Producer
    app: Any
    port: int
    responder: StandInConflictService
    users: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/sync"

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def token(
        self,
        user_id: str,
        *,
        device_id: str | None = None,
        ttl: int = 3600,
        now: float | None = None,
        secret: str | None = None,
        audience: str = auth.DEVICE_AUDIENCE,
    ) -> str:
        return auth.issue_token(
            secret or self.settings.jwt_secret, user_id, audience, ttl_seconds=ttl, device_id=device_id, now=now
        )

    # -- admin (as profile-service would have written it) -------------------------------------
    async def user(
        self, *, enabled: bool = True, offline: bool = True, profile: bool = True, via_team: bool = False
    ) -> str:
        uid = f"u-{uuid.uuid4().hex[:10]}"
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("INSERT INTO admin.business_units(id, name) VALUES ('root', 'Root') ON CONFLICT DO NOTHING")
            await c.execute(
                "INSERT INTO admin.roles(id, name, read_offline_profile) VALUES ('r-offline', 'Mobile', true), ('r-plain', 'Plain', false) ON CONFLICT DO NOTHING"
            )
            await c.execute(
                "INSERT INTO admin.users(id, name, business_unit_id, enabled) VALUES ($1, $1, 'root', $2)", uid, enabled
            )
            if offline and via_team:
                await c.execute(
                    "INSERT INTO admin.teams(id, name, business_unit_id) VALUES ($1, $1, 'root')", f"t-{uid}"
                )
                await c.execute("INSERT INTO admin.team_members(team_id, user_id) VALUES ($1, $2)", f"t-{uid}", uid)
                await c.execute("INSERT INTO admin.team_roles(team_id, role_id) VALUES ($1, 'r-offline')", f"t-{uid}")
            else:
                await c.execute(
                    "INSERT INTO admin.user_roles(user_id, role_id) VALUES ($1, $2)",
                    uid,
                    "r-offline" if offline else "r-plain",
                )
            if profile:
                # As profile-service publishes it (admin) and publish-service applies it (sync).
                await c.execute(
                    "INSERT INTO admin.published_profile_users(user_id, profile_id, version) VALUES ($1, 'p1', 1)", uid
                )
                await c.execute(
                    "INSERT INTO sync.user_profiles(user_id, profile_id, profile_version) VALUES ($1, 'p1', 1)", uid
                )
        return uid

    # -- sync schema (as publish-service writes it) -------------------------------------------
    async def subscribe(self, user_id: str, *buckets: str) -> None:
        async with self.pool.acquire() as c, c.transaction():
            for b in buckets:
                await c.execute("INSERT INTO sync.buckets(id) VALUES ($1) ON CONFLICT DO NOTHING", b)
                await c.execute(
                    "INSERT INTO sync.user_buckets(user_id, bucket_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    user_id,
                    b,
                )

    async def unsubscribe(self, user_id: str, *buckets: str) -> None:
        await self.pool.execute(
            "DELETE FROM sync.user_buckets WHERE user_id = $1 AND bucket_id = ANY($2::text[])", user_id, list(buckets)
        )

    async def put(
        self, bucket: str, entity: str, records: dict[str, dict[str, Any]], version: int | None = None
    ) -> int:
        """Upsert records into record_index and put ops into the bucket; returns the newest op id."""
        ids = list(records)
        attrs = [orjson.dumps(records[i]).decode() for i in ids]
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock(hashtext('sync:ops'))")
            await c.execute(
                "INSERT INTO sync.record_index(entity, record_id, version, attributes) "
                "SELECT $1, i, coalesce($4::bigint, 1), a::jsonb FROM unnest($2::text[], $3::text[]) AS t(i, a) "
                "ON CONFLICT (entity, record_id) DO UPDATE SET version = coalesce($4::bigint, sync.record_index.version + 1), "
                "attributes = excluded.attributes, deleted = false",
                entity,
                ids,
                attrs,
                version,
            )
            await c.execute(
                "INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version) "
                "SELECT $1, r.entity, r.record_id, nextval('sync.op_id_seq'), 'put', r.version "
                "FROM sync.record_index r WHERE r.entity = $2 AND r.record_id = ANY($3::text[]) ORDER BY r.record_id "
                "ON CONFLICT (bucket_id, entity, record_id) DO UPDATE SET op_id = excluded.op_id, op = 'put', version = excluded.version",
                bucket,
                entity,
                ids,
            )
            return await self._refresh_bucket(c, bucket)

    async def remove(self, bucket: str, entity: str, ids: list[str]) -> int:
        async with self.pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock(hashtext('sync:ops'))")
            await c.execute(
                "UPDATE sync.bucket_ops SET op = 'remove', op_id = nextval('sync.op_id_seq') "
                "WHERE bucket_id = $1 AND entity = $2 AND record_id = ANY($3::text[])",
                bucket,
                entity,
                ids,
            )
            return await self._refresh_bucket(c, bucket)

    async def _refresh_bucket(self, c: asyncpg.Connection, bucket: str) -> int:
        return int(
            await c.fetchval(
                f"""UPDATE sync.buckets b SET
                  checksum = coalesce((SELECT sum({HASH}) FROM sync.bucket_ops o WHERE o.bucket_id = $1 AND o.op = 'put'), 0) % 4294967296,
                  record_count = (SELECT count(*) FROM sync.bucket_ops o WHERE o.bucket_id = $1 AND o.op = 'put'),
                  last_op_id = coalesce((SELECT max(op_id) FROM sync.bucket_ops o WHERE o.bucket_id = $1), 0)
                WHERE b.id = $1 RETURNING last_op_id""",
                bucket,
            )
        )

    async def notify(self, buckets: dict[str, int]) -> None:
        event = BucketsAdvanced(buckets=buckets, committed_at=time.time())
        await self.producer.send(SYNC_NOTIFY.full(self.env.topic_prefix), event.envelope(key=next(iter(buckets))))

    async def notify_users(self, *user_ids: str) -> None:
        event = UserBucketsChanged(user_ids=list(user_ids))
        await self.producer.send(SYNC_NOTIFY.full(self.env.topic_prefix), event.envelope(key=user_ids[0]))


async def start_gateway(settings: Settings) -> tuple[Any, uvicorn.Server, asyncio.Task[None]]:
    app = create_app(settings)
    config = uvicorn_config(app, settings, host="127.0.0.1", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server, task), timeout=30, message="gateway started")
    await eventually(lambda: _positioned(app), timeout=30, message="gateway consumer positioned")
    return app, server, task


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
    return server.started


async def _positioned(app: Any) -> bool:
    c = getattr(app.state, "consumer", None)
    return bool(c is not None and c.caught_up.is_set())


def test_settings(env: InfraEnv, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        env.settings_kwargs(),
        sync_port=free_port(),
        sync_max_frame_bytes=64 * 1024,
        sync_hard_frame_bytes=1024 * 1024,
        sync_max_changes=50,
        sync_frame_rate=30.0,
        sync_frame_burst=40,
        sync_heartbeat_s=1.0,
        sync_idle_timeout_s=6.0,
        sync_token_grace_s=0.0,
        sync_page_size=500,
        sync_result_recheck_s=1.0,
        sync_conn_rate=1000.0,
        sync_conn_burst=1000,
        sync_hello_timeout_s=1.5,
        sync_max_pending_batches=4,
    )
    base.update(overrides)
    return Settings(**base)


@pytest_asyncio.fixture(scope="module")
async def gw(infra: Any) -> AsyncIterator[Harness]:
    env = await make_env(infra, "sync")
    pool = await db.create_pool(env.pg_dsn, max_size=8)
    await db.migrate(pool, "sync", "publish_service.migrations")
    await db.migrate(pool, "admin", "profile_service.migrations")
    await db.migrate(pool, "data", "conflict_service.migrations")
    await bus.ensure_topics(env.kafka_bootstrap, env.topic_prefix, 4)
    # Rings the doorbell after each send, as the services' producers do: the gateway's consumer
    # pauses at rest on the embedded broker (settings.kafka_doorbell) and wakes on it.
    bell = Doorbell(env.pg_dsn, pool)
    ringing = asyncio.create_task(bell.run())
    producer = bus.Producer(env.kafka_bootstrap, bell=bell)
    await producer.start()
    settings = test_settings(env)
    app, server, task = await start_gateway(settings)
    responder = StandInConflictService(env, pool, producer)
    await responder.start()
    h = Harness(env, settings, pool, producer, app, settings.sync_port, responder)
    try:
        yield h
    finally:
        await responder.stop()
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        await producer.stop()
        await stop_tasks([ringing])
        await pool.close()
        await release_env(infra, env)


@pytest_asyncio.fixture
async def store_db(infra: Any) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """A fresh database with the schemas the bucket store reads, as (setup, reads): ``setup``
    writes fixtures, ``reads`` runs with the store's read settings (``READ_SETTINGS``) as the
    gateway's pool does."""
    dsn = await infra.create_database("storedb")
    setup = await db.create_pool(dsn, max_size=1)
    reads = await db.create_pool(dsn, max_size=1, server_settings=bucket_reads.READ_SETTINGS)
    try:
        for schema, pkg in (
            ("admin", "profile_service.migrations"),
            ("data", "conflict_service.migrations"),
            ("sync", "publish_service.migrations"),
        ):
            await db.migrate(setup, schema, pkg)
        yield setup, reads
    finally:
        await reads.close()
        await setup.close()
