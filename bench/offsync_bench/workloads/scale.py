"""The scale workloads, run only when asked for (``--only``; too long for a default run):
``fanout_10k``, fanout with ten times the devices at the same per-device rate, and
``publish_20k``, a publish of 20,000 users over 5M records. ``--scale`` shrinks both (a check of
the machinery at a tiny size, or points of the cost curves in between)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from offsync_bench import setup
from offsync_bench.context import BenchContext
from offsync_bench.memory import peak_rss, rss_kb
from offsync_bench.workloads import fanout, publish

FANOUT_DEVICES = 10_000
PUBLISH_USERS = 20_000
PUBLISH_RECORDS = 5_000_000


def scaled(n: int, scale: float) -> int:
    return max(1, int(n * scale))


async def run_fanout_10k(ctx: BenchContext) -> dict[str, Any]:
    out = await fanout.measure(ctx, scaled(FANOUT_DEVICES, ctx.scale))
    return {**out, "scale": ctx.scale}


async def run_publish_20k(ctx: BenchContext) -> dict[str, Any]:
    if "org" in ctx.scratch or "org_error" in ctx.scratch:
        raise RuntimeError("publish_20k loads an org of its own: run it alone (--only publish_20k)")
    sizes = ctx.sizes.for_publish(scaled(PUBLISH_USERS, ctx.scale), scaled(PUBLISH_RECORDS, ctx.scale))
    big = replace(ctx, sizes=sizes)
    await setup.org(big)  # loading the org is not what is measured
    before = rss_kb(ctx.pid)
    async with peak_rss(ctx.pid) as peak:
        out = await publish.run(big)
    return {**out, "scale": ctx.scale, "rss_kb_before": before, "peak_rss_kb": peak.kb}
