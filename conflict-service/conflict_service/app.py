"""The conflict-service application: the shared service app, with the device-batch worker as its
part, and the records and admin routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from conflict_service import data_outbox, routes_ledger, routes_records
from conflict_service.settings import Settings
from conflict_service.worker import BatchWorker
from offsync_shared.auth import ADMIN_AUDIENCE
from offsync_shared.http_edge import KIB, MIB, BodyLimits, RouteLimit, bearer_check
from offsync_shared.runtime import Runtime
from offsync_shared.service_app import service_app
from offsync_shared.task_stop import stop_tasks

SCHEMA = "data"

# Bodies: 16 KiB without a valid token; a record write 2 MiB, a batch (up to 1000 changes) 16 MiB;
# an NDJSON import is streamed (never held whole) and may run to 1 GiB, each line at most
# bulk_import.MAX_LINE_BYTES. docs/security.md lists them.
BODY_LIMITS = BodyLimits(
    preauth_bytes=16 * KIB,
    default_bytes=2 * MIB,
    routes=(
        RouteLimit("POST", r"/v1/records/[^/]+/import", 1024 * MIB, streamed=True),
        RouteLimit("POST", r"/v1/records/[^/]+/batch", 16 * MIB),
    ),
)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def worker(rt: Runtime, app: FastAPI) -> AsyncIterator[None]:
        # Records hints where publish-service hears them: on the doorbell's connection.
        data_outbox.HINT_RECORDS = rt.bell is not None
        if not settings.conflict_consumer:
            yield
            return
        batches = BatchWorker(
            rt.pool,
            rt.producer,
            settings.kafka_bootstrap,
            settings.topic_prefix,
            max_records=settings.conflict_max_batches_per_poll,
            relay=rt.relay,
            bell=rt.bell,
            **settings.consumer_tuning(),
        )
        await batches.start()
        if rt.watch is not None:
            rt.watch.on_lost(batches.loop.rewind)  # the broker lost its logs: read them from the start
        task = rt.spawn(batches.run(), "device-batches-consumer")
        try:
            yield
        finally:
            # Stop consuming first (an in-flight transaction rolls back and is redelivered).
            await stop_tasks([task])
            await batches.stop()

    app = service_app(
        settings,
        name="conflict-service",
        body_limits=BODY_LIMITS,
        authenticated=bearer_check(settings.jwt_secret, ADMIN_AUDIENCE, settings.jwt_issuer),
        schema=SCHEMA,
        migrations="conflict_service.migrations",
        parts=worker,
        title="Offsync conflict-service",
    )

    app.include_router(routes_records.router)
    app.include_router(routes_ledger.router)
    return app
