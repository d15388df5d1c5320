"""The publish-service application: the shared service app, with the publish worker as its part
(it serves /healthz, /readyz and /metrics only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from offsync_shared.runtime import Runtime
from offsync_shared.service_app import service_app
from publish_service.settings import Settings
from publish_service.worker import PublishWorker

SCHEMA = "sync"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def worker(rt: Runtime, app: FastAPI) -> AsyncIterator[None]:
        publish = PublishWorker(
            rt.pool,
            rt.producer,
            settings.kafka_bootstrap,
            settings.topic_prefix,
            settings.batch_max_records,
            relay=rt.relay,
            bell=rt.bell,
            **settings.consumer_tuning(),
        )
        app.state.worker = publish
        if rt.watch is not None:
            rt.watch.on_lost(publish.loop.rewind)  # the broker lost its logs: read them from the start
        rt.spawn(publish.run(), "publish-worker")
        yield

    return service_app(
        settings,
        name="publish-service",
        schema=SCHEMA,
        migrations="publish_service.migrations",
        parts=worker,
        title="Offsync publish-service",
    )
