"""idle: the whole stack at rest (no device, no write) after it settled: CPU seconds each process
(services and broker nodes) uses per minute, and the total as a share of one core. What an idle
deployment costs, and a guard against background loops that spin (false rewinds, tight polls)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psutil

from offsync_bench.context import BenchContext

SETTLE_S = 10.0


def _processes(ctx: BenchContext) -> dict[str, psutil.Process]:
    procs = {name: psutil.Process(svc.proc.pid) for name, svc in ctx.group.running.items()}
    infra = ctx.infra
    if infra.broker is not None and infra.broker.proc is not None:
        procs["broker"] = psutil.Process(infra.broker.proc.pid)
    if infra.kafka is not None:
        for n in infra.kafka.nodes:
            if n.proc is not None:
                procs[f"kafka-{n.node_id}"] = psutil.Process(n.proc.pid)
    if ctx.balancer is not None and ctx.balancer.proc is not None:
        procs["haproxy"] = psutil.Process(ctx.balancer.proc.pid)
    return procs


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


async def run(ctx: BenchContext) -> dict[str, Any]:
    window = 20.0 if ctx.quick else 60.0
    await asyncio.sleep(SETTLE_S)  # let start-up work (migrations, first joins) finish before measuring
    procs = _processes(ctx)
    before = {n: _cpu(p) for n, p in procs.items()}
    t0 = time.monotonic()
    await asyncio.sleep(window)  # the measurement window itself
    elapsed = time.monotonic() - t0
    per_min = {n: round((_cpu(p) - before[n]) * 60.0 / elapsed, 2) for n, p in procs.items()}
    total = sum(per_min.values())
    return {
        "cpu_s_per_min": round(total, 2),
        "core_percent": round(total / 60.0 * 100.0, 2),
        "window_s": round(elapsed, 1),
        "per_process_cpu_s_per_min": per_min,
    }
