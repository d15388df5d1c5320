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
    idle,
    incremental,
    initial_sync,
    live,
    publish,
    reconnect,
    scale,
    upload,
)

Workload = Callable[[BenchContext], Awaitable[dict[str, Any]]]

WORKLOADS: dict[str, Workload] = {
    "publish": publish.run,
    "incremental": incremental.run,
    "initial_sync": initial_sync.run,
    "live": live.run,
    "live_after_idle": live.run_after_idle,
    "fanout": fanout.run,
    "upload": upload.run,
    "connections": connections.run,
    "reconnect": reconnect.run,
    "browser_initial_sync": browser.run_initial_sync,
    "browser_live": browser.run_live,
    "idle": idle.run,
    "fanout_10k": scale.run_fanout_10k,
    "publish_20k": scale.run_publish_20k,
}

# Run only when named with --only: minutes to tens of minutes each at full size.
SCALE_WORKLOADS = ("fanout_10k", "publish_20k")
DEFAULT_WORKLOADS = [name for name in WORKLOADS if name not in SCALE_WORKLOADS]
