"""``python -m offsync_bench`` (``make bench`` / ``make bench-quick``): runs the workloads against
the real stack and writes bench-results.json; a workload that fails reports why, never a number
it did not measure."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from offsync_bench import calibration, compare, plot, repeat, results
from offsync_bench.fleet import raise_nofile
from offsync_bench.orgdata import Sizes
from offsync_bench.workloads import DEFAULT_WORKLOADS, SCALE_WORKLOADS, WORKLOADS


def main() -> None:
    parser = argparse.ArgumentParser(prog="offsync-bench")
    parser.add_argument("--quick", action="store_true", help="about a tenth of the full sizes")
    parser.add_argument("--only", action="append", choices=list(WORKLOADS), help="run only this workload (repeatable)")
    parser.add_argument(
        "--broker",
        choices=["embedded", "kafka"],
        default="embedded",
        help="embedded Tansu (default) or a local Apache Kafka fetched through Maven (needs Java 17+, Maven)",
    )
    parser.add_argument("--kafka-brokers", type=int, default=1, help="Apache Kafka nodes with --broker kafka")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes each of conflict/publish/sync-service (2+: HAProxy in front of the gateways)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help=f"size of the scale workloads ({', '.join(SCALE_WORKLOADS)}; run only with --only) "
        "as a fraction of their full size (default 1, 0.1 with --quick)",
    )
    parser.add_argument(
        "--compare",
        default=None,
        metavar="STACKS",
        help="run the chosen workloads on each of these stacks in turn, e.g. tansu,kafka,kafka-2p,kafka3 "
        "(broker tansu|kafka[nodes], -<N>p processes per worker), and write one JSON (--out, default "
        "bench-compare.json) and one markdown table beside it (stacks as columns)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--repeat",
        type=int,
        default=repeat.REPEATS,
        help=f"repetitions of each latency workload within the run (median and spread reported; "
        f"default {repeat.REPEATS})",
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench-results.json (bench-compare.json)")
    parser.add_argument(
        "--history", type=Path, default=Path("bench-history.jsonl"), help="run history the plot is drawn from"
    )
    parser.add_argument("--plot", type=Path, default=Path("docs/performance.png"))
    args = parser.parse_args()
    sizes = Sizes().scaled(0.1) if args.quick else Sizes()
    if args.compare is not None:
        if args.broker != "embedded" or args.processes != 1 or args.kafka_brokers != 1:
            parser.error("--compare names the stacks itself: drop --broker, --processes and --kafka-brokers")
        try:
            specs = compare.parse_stacks(args.compare)
        except ValueError as exc:
            parser.error(str(exc))
        raise_nofile()
        run_compare(specs, args, sizes)
        return
    args.out = args.out or Path("bench-results.json")
    if args.broker == "kafka":  # read by offsync_stack.infra.provide
        os.environ["OFFSYNC_TEST_BROKER"] = "kafka"
        os.environ["OFFSYNC_TEST_KAFKA_BROKERS"] = str(args.kafka_brokers)
    raise_nofile()  # before the stack starts: the services and device workers inherit it
    chosen = args.only or DEFAULT_WORKLOADS
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    speed = {"before": calibration.probe()}
    print(f"machine before: {speed['before']}", flush=True)
    figures, database = asyncio.run(
        run(chosen, args.seed, sizes, args.quick, args.processes, max(1, args.repeat), scale)
    )
    speed["after"] = calibration.probe()
    print(f"machine after: {speed['after']}", flush=True)
    stack: dict[str, Any] = {"broker": args.broker, "processes": args.processes}
    if args.broker == "kafka":
        stack["kafka_brokers"] = args.kafka_brokers
    doc = results.document(args.seed, sizes, args.quick, figures, database, stack, speed)
    args.out.write_bytes(doc)
    print(results.table(figures))
    print(f"written to {args.out}")
    plot.append_history(args.history, orjson.loads(doc))
    if plot.draw(plot.load_history(args.history), args.plot):
        print(f"plot written to {args.plot}")


def run_compare(specs: list[compare.StackSpec], args: argparse.Namespace, sizes: Sizes) -> None:
    """The chosen workloads on each stack in turn; each stack is started fresh and stopped whole
    (services, balancer, brokers, PostgreSQL) before the next starts."""
    chosen = args.only or DEFAULT_WORKLOADS
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    out: Path = args.out or Path("bench-compare.json")
    runs: dict[str, dict[str, Any]] = {}
    for spec in specs:
        print(f"=== stack {spec.name}: {spec.describe()}", flush=True)
        for key, value in spec.env().items():  # read by offsync_stack.infra.provide
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        speed = {"before": calibration.probe()}
        t0 = time.monotonic()
        try:
            figures, database = asyncio.run(
                run(chosen, args.seed, sizes, args.quick, spec.processes, max(1, args.repeat), scale)
            )
        except Exception as exc:  # the stack did not start: say why, measure the next one
            traceback.print_exc()
            figures = {name: results.failed(f"stack did not run: {type(exc).__name__}: {exc}") for name in chosen}
            database = {}
        runs[spec.name] = {
            "stack": spec.describe(),
            "database": database,
            "wall_seconds": round(time.monotonic() - t0, 1),
            "calibration": {**speed, "after": calibration.probe()},
            "workloads": figures,
        }
        print(results.table(figures), flush=True)
        # Written after every stack: a later stack that hangs or is interrupted keeps these.
        doc = compare.document(results.common(args.seed, sizes, args.quick), runs)
        out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        out.with_suffix(".md").write_text(compare.markdown(doc))
    print(compare.markdown(doc))
    print(f"written to {out} and {out.with_suffix('.md')}")


async def run(
    chosen: list[str],
    seed: int,
    sizes: Sizes,
    quick: bool,
    processes: int = 1,
    repeats: int = repeat.REPEATS,
    scale: float = 1.0,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The figures of each chosen workload, and the database's durability settings they ran under."""
    from offsync_bench.context import bench_context

    async with bench_context(seed, sizes, quick, processes, scale) as ctx:
        database = await results.durability(ctx.pg_dsn)
        print(f"database durability: {database}", flush=True)
        return await run_workloads(ctx, chosen, WORKLOADS, repeats), database


async def run_workloads(
    ctx: Any, chosen: list[str], workloads: dict[str, Any], repeats: int = 1
) -> dict[str, dict[str, Any]]:
    """Runs each chosen workload in turn (those in repeat.REPEATED ``repeats`` times, summarized
    as median and spread); one that raises is reported failed with its reason (and no figure),
    and the run goes on with the next."""
    figures: dict[str, dict[str, Any]] = {}
    for name in chosen:
        t0 = time.monotonic()
        n = repeats if name in repeat.REPEATED else 1
        runs = []
        for i in range(n):
            print(f"--- {name}" + (f" ({i + 1}/{n})" if n > 1 else ""), flush=True)
            runs.append(await _once(ctx, name, workloads[name]))
            if runs[-1]["status"] == "failed":
                break  # the workload failed: no median, and no point in more repetitions
        figures[name] = runs[0] if n == 1 else repeat.summarize(runs)
        figures[name]["wall_seconds"] = round(time.monotonic() - t0, 1)
    return figures


async def _once(ctx: Any, name: str, workload: Any) -> dict[str, Any]:
    try:
        figs: dict[str, Any] = {"status": "ok", **await workload(ctx)}
        if figs["status"] == "failed":
            print(f"{name} failed: {figs.get('reason')}", flush=True)
        return figs
    except Exception as exc:  # a failed workload reports why and the run goes on
        traceback.print_exc()
        return results.failed(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
