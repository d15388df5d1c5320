"""The sync-service application: the shared service app, with the gateway as its part (its own
read pool, the hub, and the notify/batch-result consumer wired to the hub: the one handler
table), and the `/v1/sync` websocket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket
from starlette.types import Receive, Scope, Send

from offsync_shared import bus, db, ops_hint
from offsync_shared import protocol as p
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.events.sync_notify import BucketsAdvanced, SessionsRevoked, UserBucketsChanged
from offsync_shared.runtime import Runtime
from offsync_shared.service_app import service_app
from offsync_shared.task_stop import stop_tasks
from offsync_shared.topics import BATCH_RESULTS, DEAD_LETTER, DEVICE_BATCHES, SYNC_NOTIFY
from sync_service import field_app
from sync_service.bucket_reads import READ_SETTINGS, PgBucketStore
from sync_service.devices import SCHEMA as DEVICES_SCHEMA
from sync_service.devices import DeviceRegistry
from sync_service.gateway import Gateway
from sync_service.hub import Hub
from sync_service.settings import Settings

SCHEMA = None  # no outbox; sync-service writes only its device registry (gateway) and reads sync, admin, data


class KafkaBatchPublisher:
    """Forwards uploaded batches to offsync.device-batches.v1, keyed by device id (per-device order).

    Direct produce, not an outbox: the gateway owns no state, and the device keeps the batch and
    resends it (same batch id) until it gets an answer."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.topic = rt.topic(DEVICE_BATCHES)

    async def upload(self, batch: BatchUploaded) -> None:
        await self.rt.producer.send(self.topic, batch.envelope(key=batch.device_id))


class SyncApp(FastAPI):
    """FastAPI for health/metrics; the device websocket goes straight to the gateway, skipping
    the HTTP middleware stack (its frames would otherwise live as long as each connection)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = getattr(self.state, "gateway", None)
        if scope["type"] == "websocket" and scope["path"] == p.PATH and gateway is not None:
            await gateway.handle(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def gateway_parts(rt: Runtime, app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            reads = await db.create_pool(
                settings.pg_dsn,
                min_size=settings.pg_pool_min,
                max_size=settings.pg_pool_max,
                server_settings=READ_SETTINGS,
                name="sync-service reads",
            )
            stack.push_async_callback(reads.close)
            store = PgBucketStore(reads)
            hub = Hub(store)
            if rt.bell is not None:  # publish-service's commits, heard a broker hop before sync-notify
                rt.bell.listen(ops_hint.CHANNEL, hub.on_ops_hint)
            # The device registry is the one table this service writes (schema gateway).
            await db.migrate(rt.pool, DEVICES_SCHEMA, "sync_service.migrations")
            devices = DeviceRegistry(rt.pool)
            gateway = Gateway(settings, store, hub, KafkaBatchPublisher(rt), devices=devices)
            # Group-less consumer read from the end: every gateway process sees every
            # notification and every batch result (it routes those of its own devices).
            consumer = bus.ConsumerLoop(
                bus.ConsumerConfig(
                    settings.kafka_bootstrap,
                    [rt.topic(SYNC_NOTIFY), rt.topic(BATCH_RESULTS)],
                    group_id=None,
                    dead_letter_topic=rt.topic(DEAD_LETTER),
                    fetch_max_wait_ms=settings.sync_notify_fetch_wait_ms,
                    fetch_idle_wait_ms=settings.kafka_fetch_idle_wait_ms,
                ),
                rt.producer,
                name="sync-gateway",
                bell=rt.bell,
                handlers={
                    BucketsAdvanced.TYPE: hub.on_buckets_advanced,
                    UserBucketsChanged.TYPE: hub.on_user_buckets_changed,
                    SessionsRevoked.TYPE: hub.on_sessions_revoked,
                    BatchApplied.TYPE: hub.on_batch_applied,
                },
            )
            await consumer.start()
            if rt.watch is not None:  # the broker lost its state: re-read its logs, get lost batches resent
                rt.watch.on_lost(consumer.rewind)
                rt.watch.on_lost(hub.resend_unanswered)
            task = repair = registry = trim = None
            try:
                task = rt.spawn(consumer.run(), "sync-gateway-consumer")
                repair = rt.spawn(hub.reconcile_forever(settings.sync_reconcile_s), "sync-reconcile")
                registry = rt.spawn(devices.run(lambda: gateway.sessions), "device-registry")
                trim = rt.spawn(gateway.trim_after_bursts(), "heap-trim")
                app.state.gateway = gateway
                app.state.consumer = consumer
                yield
                gateway.begin_drain()
                await gateway.drained(settings.sync_drain_timeout_s)
            finally:
                await stop_tasks([t for t in (task, repair, registry, trim) if t is not None])
                await devices.close(gateway.sessions)
                with contextlib.suppress(Exception):
                    await consumer.stop()

    def gateway_ready(app: FastAPI) -> dict[str, bool]:
        return {
            "consumer_positioned": app.state.consumer.caught_up.is_set(),
            "accepting": not app.state.gateway.draining,
        }

    app = service_app(
        settings,
        name="sync-service",
        schema=SCHEMA,
        migrations=None,
        relay=False,
        parts=gateway_parts,
        extra_ready=gateway_ready,
        app_class=SyncApp,
        title="Offsync sync-service",
    )
    app.state.gateway = None
    field_app.mount(app, settings)

    @app.websocket(p.PATH)
    async def sync_socket(ws: WebSocket) -> None:
        gateway: Gateway | None = app.state.gateway
        if gateway is None:
            await ws.close(p.CLOSE_TRY_AGAIN_LATER, "try_again_later: starting")
            return
        await gateway.handle(ws)

    return app
