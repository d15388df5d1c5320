"""``python -m offsync_bench`` (``make bench`` / ``make bench-quick``): runs the workloads against
the real stack and writes bench-results.json; a workload that fails reports why, never a number
it did not measure."""

from __future__ import annotations

import argparse
import asyncio
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from offsync_bench import plot, results
from offsync_bench.fleet import raise_nofile
from offsync_bench.orgdata import Sizes
from offsync_bench.workloads import WORKLOADS


def main() -> None:
    parser = argparse.ArgumentParser(prog="offsync-bench")
    parser.add_argument("--quick", action="store_true", help="about a tenth of the full sizes")
    parser.add_argument("--only", action="append", choices=list(WORKLOADS), help="run only this workload (repeatable)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"))
    parser.add_argument(
        "--history", type=Path, default=Path("bench-history.jsonl"), help="run history the plot is drawn from"
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/performance.png"))
    args = parser.parse_args()
    sizes = Sizes().scaled(0.1) if args.quick else Sizes()
    raise_nofile()  # before the stack starts: the services and device workers inherit it
    chosen = args.only or list(WORKLOADS)
    figures, database = asyncio.run(run(chosen, args.seed, sizes, args.quick))
    doc = results.document(args.seed, sizes, args.quick, figures, database)
    args.out.write_bytes(doc)
    print(results.table(figures))
    print(f"written to {args.out}")
    plot.append_history(args.history, orjson.loads(doc))
    if plot.draw(plot.load_history(args.history), args.plot):
        print(f"plot written to {args.plot}")


async def run(
    chosen: list[str], seed: int, sizes: Sizes, quick: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The figures of each chosen workload, and the database's durability settings they ran under."""
    from offsync_bench.context import bench_context

    async with bench_context(seed, sizes, quick) as ctx:
        database = await results.durability(ctx.pg_dsn)
        print(f"database durability: {database}", flush=True)
        return await run_workloads(ctx, chosen, WORKLOADS), database


async def run_workloads(ctx: Any, chosen: list[str], workloads: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Runs each chosen workload in turn; one that raises is reported failed with its reason
    (and no figure), and the run goes on with the next."""
    figures: dict[str, dict[str, Any]] = {}
    for name in chosen:
        t0 = time.monotonic()
        print(f"--- {name}", flush=True)
        try:
            figures[name] = {"status": "ok", **await workloads[name](ctx)}
            if figures[name]["status"] == "failed":
                print(f"{name} failed: {figures[name].get('reason')}", flush=True)
        except Exception as exc:  # a failed workload reports why and the run goes on
            traceback.print_exc()
            figures[name] = results.failed(f"{type(exc).__name__}: {exc}")
        figures[name]["wall_seconds"] = round(time.monotonic() - t0, 1)
    return figures


if __name__ == "__main__":
    main()
