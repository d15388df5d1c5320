"""The stack a benchmark run measures: infrastructure (embedded unless OFFSYNC_TEST_* point
elsewhere), a fresh database and topic prefix, and the four services as separate processes."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offsync_bench.orgdata import Sizes
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra, provide
from offsync_stack.processes import SERVICES, ServiceGroup


@dataclass
class BenchContext:
    seed: int
    sizes: Sizes
    quick: bool
    infra: Infra
    pg_dsn: str
    topic_prefix: str
    group: ServiceGroup
    log_dir: Path
    scratch: dict[str, Any] = field(default_factory=dict)  # state shared between workloads (e.g. the published org)

    @property
    def admin_url(self) -> str:
        return self.group.running["profile-service"].url

    @property
    def records_url(self) -> str:
        return self.group.running["conflict-service"].url

    @property
    def sync_ws(self) -> str:
        return self.group.running["sync-service"].url.replace("http://", "ws://") + "/v1/sync"

    @property
    def jwt_secret(self) -> str:
        return DEV_JWT_SECRET

    def pid(self, service: str) -> int:
        return self.group.running[service].proc.pid

    async def restart(self, service: str) -> None:
        """A fresh process of one service on the same port (e.g. a clean heap to measure)."""
        svc = self.group.running[service]
        await asyncio.to_thread(self.group.stop, service)
        self.group.start(svc.spec, svc.port)
        await asyncio.to_thread(self.group.wait_ready, 90.0, [service])

    def admin_token(self) -> str:
        return issue_token(self.jwt_secret, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE, ttl_seconds=24 * 3600)


@contextlib.asynccontextmanager
async def bench_context(seed: int, sizes: Sizes, quick: bool) -> AsyncIterator[BenchContext]:
    with provide() as infra:
        dsn = await infra.create_database("bench")
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        log_dir = Path(tempfile.mkdtemp(prefix="offsync-bench-logs-"))
        env = {
            "OFFSYNC_ENV": "test",
            "OFFSYNC_PG_DSN": dsn,
            "OFFSYNC_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "OFFSYNC_TOPIC_PREFIX": prefix,
            "OFFSYNC_LOG_LEVEL": "WARNING",
            "OFFSYNC_PG_POOL_MAX": "20",
            "OFFSYNC_TOPIC_PARTITIONS": "4",
            **infra.broker_env,
        }
        group = ServiceGroup(env=env, log_dir=log_dir)
        try:
            for spec in SERVICES:
                group.start(spec, free_port())
            await asyncio.to_thread(group.wait_ready, 90.0)
            print(f"stack ready ({infra.backend}); service logs in {log_dir}", flush=True)
            yield BenchContext(seed, sizes, quick, infra, dsn, prefix, group, log_dir)
        finally:
            await asyncio.to_thread(group.stop_all)
