"""initial_sync: one device (SDK, SQLite file store, its own process) of a user whose set holds
every generated account, from an empty store until its first checkpoint is stored. ``cpu``: the
on-CPU and run-queue seconds of each process group over the download (the stage budget in
docs/performance.md starts from it)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from offsync_bench import fixture, setup
from offsync_bench.context import BenchContext
from offsync_bench.cpuwait import stack_window
from offsync_bench.fleet import Fleet


async def run(ctx: BenchContext) -> dict[str, Any]:
    await setup.bulk_published(ctx)
    # The device's store file (55 MB at full size) goes when the workload ends.
    with tempfile.TemporaryDirectory(prefix="offsync-bench-initial-") as tmp:
        store = Path(tmp) / "device.sqlite"
        async with Fleet(ctx.sync_ws, ctx.jwt_secret, 1) as fleet:
            await fleet.each("open", [{"specs": [], "timeout": 1}])  # worker warm (imports done) before timing
            window = stack_window(ctx.pid, fleet.pids)
            window.start()
            res = await fleet.one(
                0, "initial_sync", spec=("bench-initial", fixture.BULK_USER, str(store)), timeout=600.0
            )
            cpu = window.stop()
        if res["error"]:
            raise RuntimeError(res["error"])
        store_bytes = store.stat().st_size
    return {
        "records": res["records"],
        "seconds": round(res["seconds"], 2),
        "records_per_s": round(res["records"] / res["seconds"]),
        "store_bytes": store_bytes,
        "expected_records": ctx.sizes.accounts,
        "cpu": cpu,
    }
