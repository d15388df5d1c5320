"""What one row of the publish's first copy (data.records -> record_index) costs PostgreSQL at
several table sizes: does the cost per row grow with the size? (docs/performance.md, "Why the
first copy costs more per row as the org grows".)

Each size gets fresh tables: a source shaped like data.records (random uuid ids, ~500 B of jsonb)
and an empty target keyed like record_index, then a CHECKPOINT, then the copy, timed by the
server's CPU seconds. Sizes alternate within each repetition.

    .venv/bin/python bench/scripts/copy_growth.py --rows 550000,1550000 --repeat 3
    # the heap part alone, with 4 GB of shared_buffers:
    .venv/bin/python bench/scripts/copy_growth.py --variant heap --setting shared_buffers=4GB
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import asyncpg

from offsync_bench.cpuwait import postgres_cpu_s
from offsync_stack.embedded import EmbeddedPostgres, rmtree

COLUMNS = """entity text NOT NULL, {id} text NOT NULL, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
    owner_id text, owner_type text, business_unit_id text, attributes jsonb NOT NULL,
    created_at timestamptz, modified_at timestamptz, PRIMARY KEY (entity, {id})"""

FILL = """INSERT INTO src SELECT (ARRAY['account','contact','opportunity','task'])[1 + i % 4],
    gen_random_uuid()::text, 1, false, 'u' || (i % 20000), 'user', 'b' || (i % 21),
    jsonb_build_object('name', 'record ' || i, 'city', repeat('x', 40), 'phone', '555-' || i,
                       'notes', repeat(md5(i::text), 8)),
    now(), now() FROM generate_series(1, $1) i"""

COPY = """INSERT INTO dst SELECT d.entity, d.id, d.version, d.deleted, d.owner_id, d.owner_type,
    d.business_unit_id, d.attributes, d.created_at, d.modified_at FROM src d"""
# As bucket_writes copies: rows the index lacks (a hash anti-join against the empty target).
PROBE = " WHERE NOT EXISTS (SELECT 1 FROM dst x WHERE x.entity = d.entity AND x.record_id = d.id)"

VARIANTS = {
    "copy": "the publish's statement",
    "heap": "the target without its primary key (the heap part alone)",
    "sorted": "the source stored in key order (CLUSTER) first",
}


async def one(dsn: str, rows: int, variant: str) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS src, dst")
        await conn.execute(f"CREATE TABLE src ({COLUMNS.format(id='id')})")
        await conn.execute(FILL, rows)
        await conn.execute(f"CREATE TABLE dst ({COLUMNS.format(id='record_id')})")
        if variant == "heap":
            await conn.execute("ALTER TABLE dst DROP CONSTRAINT dst_pkey")
        if variant == "sorted":
            await conn.execute("CLUSTER src USING src_pkey")
        await conn.execute("VACUUM ANALYZE src")
        await conn.execute("CHECKPOINT")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()")
        cpu0, t0 = postgres_cpu_s(), time.perf_counter()
        await conn.execute(COPY + ("" if variant == "heap" else PROBE))
        seconds, cpu = time.perf_counter() - t0, postgres_cpu_s() - cpu0
        wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", lsn)
        key_mb = await conn.fetchval("SELECT coalesce(pg_relation_size(to_regclass('dst_pkey')), 0) / 1048576")
        buffers = await conn.fetchval("SHOW shared_buffers")
        await conn.execute("DROP TABLE src, dst")
        return {
            "variant": variant,
            "rows": rows,
            "seconds": round(seconds, 2),
            "cpu_us_per_row": round(cpu / rows * 1e6, 2),
            "wal_bytes_per_row": round(float(wal) / rows),
            "key_mb": int(key_mb),
            "shared_buffers": buffers,
        }
    finally:
        await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="550000,1550000", help="comma-separated sizes")
    ap.add_argument(
        "--variant", choices=sorted(VARIANTS), default="copy", help="; ".join(f"{k}: {v}" for k, v in VARIANTS.items())
    )
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--setting", action="append", default=[], help="a server setting, e.g. shared_buffers=4GB")
    args = ap.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    root = Path(tempfile.mkdtemp(prefix="offsync-copy-growth-"))
    pg = EmbeddedPostgres(root, settings=tuple(args.setting))
    pg.start()
    try:
        for _ in range(args.repeat):
            for rows in sizes:
                print(json.dumps(await one(pg.dsn(), rows, args.variant)), flush=True)
    finally:
        pg.stop()
        rmtree(root)


if __name__ == "__main__":
    asyncio.run(main())
