"""The workloads of ../shared/bench/workloads.md, by id. Each takes the BenchContext and returns
the figures it measured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from offsync_bench.context import BenchContext

Workload = Callable[[BenchContext], Awaitable[dict[str, Any]]]


def _pending(name: str) -> Workload:
    async def run(ctx: BenchContext) -> dict[str, Any]:
        raise NotImplementedError(f"workload {name!r} is not implemented yet")

    return run


WORKLOADS: dict[str, Workload] = {
    name: _pending(name)
    for name in ("publish", "incremental", "initial_sync", "live", "fanout", "upload", "connections", "reconnect")
}
