"""The workloads of ../shared/bench/workloads.md, by id, one module each. Each takes the
BenchContext and returns the figures it measured (or raises: the run reports it as failed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from offsync_bench.context import BenchContext
from offsync_bench.workloads import (
    browser,
    connections,
    fanout,
    incremental,
    initial_sync,
    live,
    publish,
    reconnect,
    upload,
)

Workload = Callable[[BenchContext], Awaitable[dict[str, Any]]]

WORKLOADS: dict[str, Workload] = {
    "publish": publish.run,
    "incremental": incremental.run,
    "initial_sync": initial_sync.run,
    "live": live.run,
    "fanout": fanout.run,
    "upload": upload.run,
    "connections": connections.run,
    "reconnect": reconnect.run,
    "browser_initial_sync": browser.run_initial_sync,
    "browser_live": browser.run_live,
}
