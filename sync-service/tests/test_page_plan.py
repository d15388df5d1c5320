"""An ops page costs O(page), not O(bucket): on the store's read connections (READ_SETTINGS) the
page read walks the (bucket_id, op_id) index for one page, even for a bucket filled after the
last ANALYZE, which the planner takes for a few rows (and would otherwise bitmap-scan and sort
whole, page after page)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from sync_service import bucket_reads

pytestmark = pytest.mark.integration


async def _plan(pool: asyncpg.Pool, after_key: bool) -> str:
    args: tuple[Any, ...]
    if after_key:
        args = ("u1", ["big"], 100, 500, "big", "account", "r")
        sql = bucket_reads._PAGE_AFTER_KEY
    else:
        args = ("u1", ["big"], 100, 500)
        sql = bucket_reads._PAGE_AFTER_OP
    rows = await pool.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + sql, *args)
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("after_key", [False, True])
async def test_a_page_of_an_unanalyzed_bucket_walks_the_op_index(
    store_db: tuple[asyncpg.Pool, asyncpg.Pool], after_key: bool
) -> None:
    setup, reads = store_db
    # Many small buckets, analyzed; then one big bucket the statistics have never seen.
    await setup.execute(
        """INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
           SELECT 'small-' || (g % 500), 'account', 's' || g, g, 'put', 1 FROM generate_series(1, 5000) g"""
    )
    await setup.execute("ANALYZE sync.bucket_ops")
    await setup.execute(
        """INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
           SELECT 'big', 'account', 'r' || g, 10000 + g, 'put', 1 FROM generate_series(1, 50000) g"""
    )
    await setup.execute("INSERT INTO sync.user_buckets VALUES ('u1', 'big')")
    plan = await _plan(reads, after_key)
    assert "Bitmap" not in plan, plan
    assert "bucket_ops_by_op" in plan, plan
    # The index walk stops after the page: a few hundred rows read, not the bucket's 50,000.
    assert "rows=50000" not in plan.replace(".00", ""), plan


@pytest.mark.parametrize("analyzed", ["nothing since empty", "bucket_ops", "both"])
async def test_a_page_looks_its_records_up_by_key_whatever_the_statistics(
    store_db: tuple[asyncpg.Pool, asyncpg.Pool], analyzed: str
) -> None:
    """The page is joined to record_index by its primary key, one lookup per op, in every state
    the statistics may be in after a publish. A form whose plan hangs on estimates (the page's
    ids as one ``= ANY`` set, tried in docs/performance.md's initial_sync round four) read the
    whole of record_index per page, or matched every op against every record, in some of them."""
    setup, reads = store_db
    await setup.execute("ANALYZE sync.record_index")
    await setup.execute("ANALYZE sync.bucket_ops")  # both empty: as right after the migrations
    # Records as wide as real ones (a seq scan of a few narrow rows may rightly win).
    await setup.execute(
        """INSERT INTO sync.record_index(entity, record_id, version, attributes)
           SELECT e, e || lpad(g::text, 6, '0'), 1, jsonb_build_object('note', repeat('x', 300))
           FROM generate_series(1, 50000) g, unnest(ARRAY['account', 'contact']) e"""
    )
    await setup.execute(
        """INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
           SELECT 'big', 'account', 'account' || lpad(g::text, 6, '0'), g, 'put', 1
           FROM generate_series(1, 5000) g"""
    )
    await setup.execute("INSERT INTO sync.user_buckets VALUES ('u1', 'big')")
    if analyzed != "nothing since empty":
        await setup.execute("ANALYZE sync.bucket_ops")
    if analyzed == "both":
        await setup.execute("ANALYZE sync.record_index")
    rows = await reads.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + bucket_reads._PAGE_AFTER_OP, "u1", ["big"], 0, 500)
    plan = "\n".join(r[0] for r in rows)
    assert "Seq Scan on record_index" not in plan, plan
    assert "Index Scan using record_index_pkey on record_index" in plan, plan
    assert "Index Cond: ((entity = p.entity) AND (record_id = p.record_id))" in plan, plan
