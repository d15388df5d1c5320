"""bench-results.json: the figures each workload measured, or why it has none, plus the machine,
the git commit and the sizes used."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict
from typing import Any

import orjson
import psutil

from offsync_bench.orgdata import Sizes


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def failed(reason: str) -> dict[str, Any]:
    return {"status": "failed", "reason": reason}


# How the workloads find the org (offsync_bench.fixture.copy_population), recorded in every
# results document: figures taken before 2026-12-07 22:00 UTC started right after the load.
FIXTURE = {
    "org": "COPY, then VACUUM (ANALYZE) and CHECKPOINT before the first workload: an org at rest "
    '(docs/performance.md, "publish", round eight)'
}

DURABILITY_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
# Not durability, but they move the figures (docs/performance.md, "publish: budget per stage" and
# "The change path"): how reads are done, whether new WAL segments are zero-filled, whether
# backends have their evicted pages written back as they go, how much WAL is buffered and how
# often the WAL writer drains it, and the collation every text key is compared with.
COST_SETTINGS = ("io_method", "wal_init_zero", "backend_flush_after", "wal_buffers", "wal_writer_delay")


async def durability(dsn: str) -> dict[str, Any]:
    """The durability settings the measured PostgreSQL runs with, as the server reports them
    (SHOW), and whether they are PostgreSQL's durable defaults; also its io_method and the
    database's collation (provider and locale)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        shown = {name: await conn.fetchval(f"SHOW {name}") for name in DURABILITY_SETTINGS + COST_SETTINGS}
        provider, locale = await conn.fetchrow(
            """SELECT CASE datlocprovider WHEN 'b' THEN 'builtin' WHEN 'i' THEN 'icu' ELSE 'libc' END,
                      coalesce(datlocale, datcollate)
               FROM pg_database WHERE datname = current_database()"""
        )
    finally:
        await conn.close()
    durable = shown["fsync"] == "on" and shown["synchronous_commit"] != "off" and shown["full_page_writes"] == "on"
    return {**shown, "collation": f"{provider} {locale}", "durable": durable}


def common(seed: int, sizes: Sizes, quick: bool) -> dict[str, Any]:
    """What every results document opens with: when, which commit, which machine, which sizes."""
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "machine": machine(),
        "seed": seed,
        "quick": quick,
        "sizes": asdict(sizes),
        "fixture": FIXTURE,
    }


def document(
    seed: int,
    sizes: Sizes,
    quick: bool,
    workloads: dict[str, dict[str, Any]],
    database: dict[str, Any] | None = None,
    stack: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> bytes:
    """``stack``: what ran (broker, broker nodes, processes per worker), so runs compare;
    ``calibration``: the machine's speed before and after (offsync_bench.calibration)."""
    return orjson.dumps(
        {
            **common(seed, sizes, quick),
            "calibration": calibration or {},
            "database": database or {},
            "stack": stack or {"broker": "embedded", "processes": 1},
            **workloads,
        },
        option=orjson.OPT_INDENT_2,
    )


def table(workloads: dict[str, dict[str, Any]]) -> str:
    """One line per workload; a repeated workload's figures are medians, each one that varied
    followed by its [min..max] over the repetitions."""
    lines = [f"{'workload':<14} figures (repeated: median [min..max] of N runs)"]
    for name, figs in workloads.items():
        if figs.get("status") == "failed":
            lines.append(f"{name:<14} FAILED: {figs.get('reason')}")
        else:
            spread = {k: v for k, v in figs.get("spread", {}).items() if v[0] != v[1]}
            shown = ", ".join(
                f"{k}={v}" + (f" [{spread[k][0]}..{spread[k][1]}]" if k in spread else "")
                for k, v in figs.items()
                if k != "status" and not isinstance(v, (dict, list))
            )
            lines.append(f"{name:<14} {shown}")
    return "\n".join(lines)
