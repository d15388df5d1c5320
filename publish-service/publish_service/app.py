"""The publish-service application: opens its runtime in the lifespan, starts the publish worker
and serves /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from offsync_shared import http
from offsync_shared.runtime import Runtime, open_runtime
from publish_service.settings import Settings
from publish_service.worker import PublishWorker

SCHEMA = "sync"


def create_app(settings: Settings) -> FastAPI:
    state: dict[str, Runtime] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, schema=SCHEMA, migrations="publish_service.migrations") as rt:
            state["rt"] = rt
            app.state.runtime = rt
            worker = PublishWorker(
                rt.pool,
                rt.producer,
                settings.kafka_bootstrap,
                settings.topic_prefix,
                settings.batch_max_records,
                relay=rt.relay,
                **settings.consumer_tuning(),
            )
            app.state.worker = worker
            if rt.watch is not None:
                rt.watch.on_lost(worker.loop.rewind)  # the broker lost its logs: read them from the start
            rt.spawn(worker.run(), "publish-worker")
            yield

    app = FastAPI(title="Offsync publish-service", version="0.1.0", lifespan=lifespan)

    async def ready() -> dict[str, bool]:
        rt = state.get("rt")
        return await rt.ready() if rt else {"started": False}

    http.install(app, "publish-service", ready)
    return app
