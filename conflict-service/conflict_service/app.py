"""The conflict-service application: opens its runtime in the lifespan, starts the device-batch
worker and wires the records and admin routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from conflict_service.api import build_router
from conflict_service.applier import Topics
from conflict_service.settings import Settings
from conflict_service.worker import BatchWorker, topics_for
from offsync_shared import http
from offsync_shared.outbox import OutboxRelay
from offsync_shared.runtime import Runtime, open_runtime, stop_tasks

SCHEMA = "data"


def create_app(settings: Settings) -> FastAPI:
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, schema=SCHEMA, migrations="conflict_service.migrations") as rt:
            state["rt"] = rt
            app.state.runtime = rt
            worker, task = None, None
            if settings.conflict_consumer:
                worker = BatchWorker(
                    rt.pool,
                    rt.producer,
                    settings.kafka_bootstrap,
                    settings.topic_prefix,
                    max_records=settings.conflict_max_batches_per_poll,
                    relay=rt.relay,
                    **settings.consumer_tuning(),
                )
                await worker.start()
                if rt.watch is not None:
                    rt.watch.on_lost(worker.loop.rewind)  # the broker lost its logs: read them from the start
                task = rt.spawn(worker.run(), "device-batches-consumer")
            try:
                yield
            finally:
                # Stop consuming first (an in-flight transaction rolls back and is redelivered).
                if task is not None:
                    await stop_tasks([task])
                if worker is not None:
                    await worker.stop()

    app = FastAPI(title="Offsync conflict-service", version="0.1.0", lifespan=lifespan)

    async def ready() -> dict[str, bool]:
        rt = state.get("rt")
        return await rt.ready() if rt else {"started": False}

    def pool() -> asyncpg.Pool:
        return state["rt"].pool

    def topics() -> Topics:
        return topics_for(settings.topic_prefix)

    def relay() -> OutboxRelay | None:
        return state["rt"].relay

    http.install(app, "conflict-service", ready)
    app.include_router(build_router(settings, pool, topics, relay))
    return app
