"""incremental: record changes at a steady rate through the records API (NDJSON import, one
request per 100 ms, from a load-generator process) against the published profile; latency from
each change's commit (data.records.modified_at) to the commit of the bucket-store ops that carry
it (BucketsAdvanced.committed_at, read off offsync.sync-notify.v1 by a watcher process)."""

from __future__ import annotations

import random
import time
from typing import Any

from offsync_bench import latency, loadgen, setup
from offsync_bench.context import BenchContext
from offsync_bench.stats import summary_ms
from offsync_bench.watcher import NotifyWatcher
from offsync_shared.topics import SYNC_NOTIFY
from offsync_stack.testing import eventually

_WAL_LSN = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"


async def run(ctx: BenchContext) -> dict[str, Any]:
    loaded = await setup.main_published(ctx)
    sizes = ctx.sizes
    n = int(sizes.incremental_rate * sizes.incremental_seconds)
    # Each repetition changes accounts no earlier one changed (while there are enough): a record
    # changed again since the last checkpoint costs less WAL (no full-page image) than a field
    # edit usually does, and repetitions 2 and 3 on the same accounts were ~2 ms faster at p99.
    turn = ctx.scratch["incremental_turns"] = ctx.scratch.get("incremental_turns", 0) + 1
    used: set[str] = ctx.scratch.setdefault("incremental_used", set())
    fresh = [a for a in loaded.account_ids if a not in used]
    if len(fresh) < n:
        used.clear()
        fresh = list(loaded.account_ids)
    rng = random.Random(ctx.seed + 11 + 1000 * (turn - 1))
    ids = rng.sample(fresh, min(n, len(fresh)))  # distinct: one op per record, no compaction
    used.update(ids)
    lines = []
    for rid in ids:
        owner_id, owner_type, attrs = loaded.account_rows[rid]
        lines.append(
            {
                "id": rid,
                "owner_id": owner_id,
                "owner_type": owner_type,
                "attributes": {**attrs, "revenue": round(rng.uniform(1e4, 1e7), 2)},
            }
        )
    watcher = NotifyWatcher(ctx.infra.kafka_bootstrap, SYNC_NOTIFY.full(ctx.topic_prefix))
    conn = await setup.pg(ctx)
    try:
        await watcher.ready()
        # Changing revenue moves no record between buckets: the records with ops now are exactly
        # those whose change must show up as new ops.
        expected = {
            r["record_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT record_id FROM sync.bucket_ops WHERE entity = 'account' AND record_id = ANY($1)", ids
            )
        }
        if not expected:
            raise RuntimeError("none of the changed accounts is in any bucket")
        wal0 = await conn.fetchval(_WAL_LSN)
        t0 = time.time()
        gen = await loadgen.run_in_process(
            loadgen.import_paced, ctx.records_url, ctx.admin_token(), "account", lines, float(sizes.incremental_rate)
        )
        if gen["error_count"]:
            raise RuntimeError(f"{gen['error_count']} import requests failed, e.g. {gen['errors'][:2]}")
        rows = await conn.fetch(
            "SELECT id, version, modified_at FROM data.records WHERE entity = 'account' AND id = ANY($1)", ids
        )
        commits = {(r["id"], int(r["version"])): r["modified_at"].timestamp() for r in rows}
        if len(commits) != len(ids):
            raise RuntimeError(f"only {len(commits)} of {len(ids)} changed records found")

        async def all_visible() -> latency.Pairing | None:
            ops = await conn.fetch(
                """SELECT o.record_id, o.version, o.bucket_id, o.op_id FROM sync.bucket_ops o
                   WHERE o.entity = 'account' AND o.record_id = ANY($1)""",
                ids,
            )
            pairing = latency.commit_to_op_visible(
                commits,
                [(o["record_id"], int(o["version"]), o["bucket_id"], int(o["op_id"])) for o in ops],
                await watcher.collect(),
            )
            with_ops = {o["record_id"] for o in ops if (o["record_id"], int(o["version"])) in commits}
            return pairing if with_ops >= expected and len(pairing.latencies_s) >= len(expected) else None

        pairing = await eventually(
            all_visible, timeout=120, interval=0.25, message="every change's ops visible in the bucket store"
        )
        wal_mb = round((await conn.fetchval(_WAL_LSN) - wal0) / 2**20)
    finally:
        await conn.close()
        await watcher.stop()
    s = summary_ms(pairing.latencies_s)
    return {
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "max_ms": s["max_ms"],
        "changes": len(ids),
        "changes_with_ops": s["samples"],
        "offered_rate": sizes.incremental_rate,
        "achieved_rate": round(gen["achieved_rate"], 1),
        "seconds": round(gen["seconds"], 1),
        "started_at": round(t0, 3),
        # WAL the window wrote: after a checkpoint the first change to each page is a full-page
        # image, so this shows how much of the write path's cost is the checkpoint's aftermath.
        "wal_mb": wal_mb,
    }
