"""The stack a benchmark run measures: infrastructure (embedded unless OFFSYNC_TEST_* point
elsewhere), a fresh database and topic prefix, and the four services as separate processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offsync_bench.orgdata import Sizes
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.balancer import Balancer
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra, provide
from offsync_stack.processes import SERVICES, ServiceGroup

SCALED = ("conflict-service", "publish-service", "sync-service")  # what --processes multiplies


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
    balancer: Balancer | None = None  # HAProxy in front of the gateways when running several
    scale: float = 1.0  # of the scale workloads (fanout_10k, publish_20k)

    @property
    def admin_url(self) -> str:
        return self.group.running["profile-service"].url

    @property
    def records_url(self) -> str:
        return self.group.running["conflict-service"].url

    @property
    def sync_ws(self) -> str:
        if self.balancer is not None:
            return self.balancer.ws_url
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


# The services' log level (WARNING: their INFO lines cost CPU inside the windows); a run with it
# set keeps the logs, e.g. to read publish-service's per-step seconds ("reconciled").
LOG_LEVEL_ENV = "OFFSYNC_BENCH_LOG_LEVEL"


@contextlib.asynccontextmanager
async def bench_context(
    seed: int, sizes: Sizes, quick: bool, processes: int = 1, scale: float = 1.0
) -> AsyncIterator[BenchContext]:
    """``processes`` > 1 runs that many of conflict-service, publish-service and sync-service
    (consumer groups share the partitions) with HAProxy in front of the gateways."""
    with provide() as infra:
        dsn = await infra.create_database("bench")
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        log_dir = Path(tempfile.mkdtemp(prefix="offsync-bench-logs-"))
        env = {
            "OFFSYNC_ENV": "test",
            "OFFSYNC_PG_DSN": dsn,
            "OFFSYNC_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "OFFSYNC_TOPIC_PREFIX": prefix,
            "OFFSYNC_LOG_LEVEL": os.environ.get(LOG_LEVEL_ENV, "WARNING"),
            "OFFSYNC_PG_POOL_MAX": "20",
            "OFFSYNC_TOPIC_PARTITIONS": "4",
            **infra.broker_env,
        }
        group = ServiceGroup(env=env, log_dir=log_dir)
        balancer: Balancer | None = None
        finished = False
        try:
            for spec in SERVICES:
                group.start(spec, free_port())
                if spec.name in SCALED:
                    for k in range(2, processes + 1):
                        group.start(spec, free_port(), instance=f"{spec.name}-{k}")
            await asyncio.to_thread(group.wait_ready, 90.0)
            if processes > 1:
                gateways = [svc.port for name, svc in group.running.items() if name.startswith("sync-service")]
                balancer = Balancer(log_dir / "lb", gateways)
                await asyncio.to_thread(balancer.start)
            print(f"stack ready ({infra.backend}, {processes} process(es) per worker); logs in {log_dir}", flush=True)
            yield BenchContext(seed, sizes, quick, infra, dsn, prefix, group, log_dir, balancer=balancer, scale=scale)
            finished = True
        finally:
            if balancer is not None:
                await asyncio.to_thread(balancer.stop)
            await asyncio.to_thread(group.stop_all)
            _tidy_logs(log_dir, finished)


def _tidy_logs(log_dir: Path, finished: bool) -> None:
    """Delete the services' logs of a run that finished with nothing at ERROR or above; keep them,
    and say where, when a reader has something to look at."""
    if finished and LOG_LEVEL_ENV not in os.environ and not any(_has_errors(path) for path in log_dir.rglob("*.log")):
        shutil.rmtree(log_dir, ignore_errors=True)
    else:
        print(f"the services' logs are kept in {log_dir}", flush=True)


def _has_errors(path: Path) -> bool:
    with path.open(errors="replace") as lines:
        return any('"level":"ERROR"' in line or '"level":"CRITICAL"' in line or "Traceback" in line for line in lines)
