"""The bucket store: writes ops, checksums and bucket rows of the sync schema, set-wise.

Every writer calls :func:`lock_ops` first in its transaction: op writers serialize on one
advisory lock from op-id allocation to commit, so committed op ids always form a prefix and a
reader never skips an op that commits later (docs/architecture.md, failure mode 1).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby

import asyncpg

from offsync_shared import outbox
from offsync_shared.checksum import SQL_OP_HASH, op_hash
from offsync_shared.events.sync_notify import BucketsAdvanced, UserBucketsChanged
from publish_service.rules.buckets import (
    BucketDef,
    depth_of,
    link_indexes,
    param_rows,
    parent_indexes,
    sql_family_select,
)
from publish_service.rules.model import Record

log = logging.getLogger(__name__)
SCHEMA = "sync"
MOD = 2**32
# Above this many freshly copied rows the planner's statistics are refreshed before joining.
ANALYZE_AFTER_ROWS = 5000
_INDEX_COLS = (
    "entity, record_id, version, deleted, owner_id, owner_type, business_unit_id, attributes, created_at, modified_at"
)


@dataclass(frozen=True)
class Op:
    bucket_id: str
    entity: str
    record_id: str
    op: str  # put | remove
    version: int  # put: the new version; remove: the version that leaves
    old_version: int | None  # version of the put it replaces, None if the record was not in the bucket


async def lock_ops(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sync:ops'))")


async def write_ops(conn: asyncpg.Connection, ops: list[Op]) -> dict[str, int]:
    """Upsert compacted ops with fresh op ids and apply their checksum/count deltas.
    Returns bucket id -> newest op id."""
    if not ops:
        return {}
    rows = await conn.fetch(
        """
        INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
        SELECT b, e, r, nextval('sync.op_id_seq'), o, v
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS t(b, e, r, o, v)
        ON CONFLICT (bucket_id, entity, record_id)
        DO UPDATE SET op_id = EXCLUDED.op_id, op = EXCLUDED.op, version = EXCLUDED.version
        RETURNING bucket_id, op_id
        """,
        [o.bucket_id for o in ops],
        [o.entity for o in ops],
        [o.record_id for o in ops],
        [o.op for o in ops],
        [o.version for o in ops],
    )
    newest: dict[str, int] = {}
    for r in rows:
        newest[r["bucket_id"]] = max(newest.get(r["bucket_id"], 0), r["op_id"])
    delta: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for o in ops:
        if o.old_version is not None:
            delta[o.bucket_id] -= op_hash(o.entity, o.record_id, o.old_version)
            count[o.bucket_id] -= 1
        if o.op == "put":
            delta[o.bucket_id] += op_hash(o.entity, o.record_id, o.version)
            count[o.bucket_id] += 1
    ids = sorted(newest)
    await conn.execute(
        """
        UPDATE sync.buckets b SET checksum = ((b.checksum + d.delta) % 4294967296 + 4294967296) % 4294967296,
               record_count = b.record_count + d.dc, last_op_id = GREATEST(b.last_op_id, d.maxop)
        FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS d(id, delta, dc, maxop)
        WHERE b.id = d.id
        """,
        ids,
        [delta[i] % MOD for i in ids],
        [count[i] for i in ids],
        [newest[i] for i in ids],
    )
    return newest


async def mirror_records(conn: asyncpg.Connection, entities: Iterable[str], analyze: bool = True) -> int:
    """Copy the records of ``entities`` into record_index from data.records (read-only), once per
    entity: afterwards every RecordChanged keeps the index current. Rows already indexed are left
    alone (they change only through the incremental path, so the index always holds the version
    every bucket's put refers to); so this is safe outside the ops lock too."""
    todo = sorted(set(entities) - {r["entity"] for r in await conn.fetch("SELECT entity FROM sync.mirrored_entities")})
    if not todo:
        return 0
    copy = f"""
        INSERT INTO sync.record_index({_INDEX_COLS})
        SELECT d.entity, d.id, d.version, d.deleted, d.owner_id, d.owner_type, d.business_unit_id, d.attributes,
               d.created_at, d.modified_at
        FROM data.records d WHERE d.entity = ANY($1::text[])
        """
    try:
        # A plain insert of the rows the index lacks costs about half of an ON CONFLICT insert
        # (no speculative insertion). A RecordChanged indexing one of them concurrently (outside
        # our ops lock) makes it fail: then the upsert, which tolerates that, does the copy.
        async with conn.transaction():
            status = await conn.execute(
                copy
                + "AND NOT EXISTS (SELECT 1 FROM sync.record_index x WHERE x.entity = d.entity AND x.record_id = d.id)",
                todo,
            )
    except asyncpg.UniqueViolationError:
        status = await conn.execute(copy + "ON CONFLICT (entity, record_id) DO NOTHING", todo)
    await conn.execute("INSERT INTO sync.mirrored_entities SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", todo)
    n = int(status.split()[-1])
    if analyze and n > ANALYZE_AFTER_ROWS:
        await conn.execute("ANALYZE sync.record_index")
    return n


async def premirror(pool: asyncpg.Pool, entities: Iterable[str]) -> None:
    """Mirror entities concurrently, one connection each, before a publish's transaction: the
    copy dominates a first publish and parallelizes across cores."""

    async def one(entity: str) -> int:
        async with pool.acquire() as conn:
            async with conn.transaction():
                return await mirror_records(conn, [entity], analyze=False)

    t0 = time.perf_counter()
    copied = await asyncio.gather(*(one(e) for e in sorted(set(entities))))
    if sum(copied) > ANALYZE_AFTER_ROWS:
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE sync.record_index")
    if any(copied):
        log.info("records mirrored", extra={"rows": sum(copied), "seconds": round(time.perf_counter() - t0, 3)})


async def upsert_index(conn: asyncpg.Connection, recs: list[Record]) -> None:
    if not recs:
        return
    await conn.execute(
        f"""
        INSERT INTO sync.record_index({_INDEX_COLS})
        SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[], $5::text[], $6::text[], $7::text[], $8::jsonb[],
                             $9::timestamptz[], $10::timestamptz[])
        ON CONFLICT (entity, record_id) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted,
            owner_id = EXCLUDED.owner_id, owner_type = EXCLUDED.owner_type,
            business_unit_id = EXCLUDED.business_unit_id, attributes = EXCLUDED.attributes,
            created_at = COALESCE(EXCLUDED.created_at, sync.record_index.created_at), modified_at = EXCLUDED.modified_at
        WHERE sync.record_index.version < EXCLUDED.version
        """,
        [r.entity for r in recs],
        [r.id for r in recs],
        [r.version for r in recs],
        [r.deleted for r in recs],
        [r.owner_id for r in recs],
        [r.owner_type for r in recs],
        [r.business_unit_id for r in recs],
        [dict(r.attributes) for r in recs],
        [r.created_at for r in recs],
        [r.modified_at for r in recs],
    )


async def materialize(conn: asyncpg.Connection, defs: list[BucketDef], timings: dict[str, float] | None = None) -> int:
    """Create new buckets and fill them set-wise (one statement per bucket family, base buckets
    before the buckets derived from them). Returns the number of ops written."""
    if not defs:
        return 0
    await conn.execute(
        "INSERT INTO sync.buckets(id, definition) SELECT * FROM unnest($1::text[], $2::jsonb[]) ON CONFLICT DO NOTHING",
        [d.id for d in defs],
        [d.definition() for d in defs],
    )
    # Big set-wise joins and sorts: keep them in memory for this transaction only.
    await conn.execute("SET LOCAL work_mem = '256MB'")
    for ddl in link_indexes(defs).values():
        await conn.execute(ddl)
    written = 0
    ordered = sorted(defs, key=lambda d: (depth_of(d), d.family))
    for depth, at_depth in groupby(ordered, key=depth_of):
        if depth > 0:
            # Built over the parents' fresh puts (cheaper than maintaining it row by row); a no-op
            # once it exists.
            for ddl in parent_indexes(defs).values():
                await conn.execute(ddl)
        if depth > 0 and written > ANALYZE_AFTER_ROWS:
            await conn.execute("ANALYZE sync.bucket_ops")
        for _, fam_iter in groupby(at_depth, key=lambda d: d.family):
            fam = list(fam_iter)
            t0 = time.perf_counter()
            written += await _fill_family(conn, fam)
            if timings is not None:
                timings[f"{fam[0].entity}:{fam[0].filter['k']}:{fam[0].access}"] = round(time.perf_counter() - t0, 3)
    return written


async def _fill_family(conn: asyncpg.Connection, fam: list[BucketDef]) -> int:
    """Insert the puts of a family's new buckets and set their checksum, count and last op id
    from the inserted rows in the same statement (no second pass over the ops)."""
    h = SQL_OP_HASH.format(entity="i.entity", id="i.record_id", version="i.version")
    rows = await conn.fetch(
        f"""
        WITH i AS (
            INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
            SELECT s.bucket_id, s.entity, s.record_id, nextval('sync.op_id_seq'), 'put', s.version
            FROM ({sql_family_select(fam[0], "$1")} ORDER BY 1, 2, 3) s
            RETURNING bucket_id, entity, record_id, op_id, version
        )
        UPDATE sync.buckets b SET checksum = s.checksum, record_count = s.n, last_op_id = s.last_op
        FROM (SELECT i.bucket_id, sum({h}) % 4294967296 AS checksum, count(*) AS n, max(i.op_id) AS last_op
              FROM i GROUP BY i.bucket_id) s
        WHERE b.id = s.bucket_id
        RETURNING s.n
        """,
        param_rows(fam),
    )
    return sum(r["n"] for r in rows)


async def drop_buckets(conn: asyncpg.Connection, ids: list[str]) -> None:
    if ids:
        await conn.execute("DELETE FROM sync.bucket_ops WHERE bucket_id = ANY($1::text[])", ids)
        await conn.execute("DELETE FROM sync.buckets WHERE id = ANY($1::text[])", ids)


async def bump_generation(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE sync.registry_generation SET generation = generation + 1")


async def generation(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT generation FROM sync.registry_generation"))


async def load_defs(conn: asyncpg.Connection) -> list[BucketDef]:
    return [
        BucketDef.from_definition(r["id"], r["definition"])
        for r in await conn.fetch("SELECT id, definition FROM sync.buckets")
    ]


async def notify(conn: asyncpg.Connection, topic: str, advanced: Mapping[str, int], users: Iterable[str] = ()) -> None:
    """Tell sync gateways, in this transaction, which buckets advanced and whose bucket set changed."""
    rows = []
    if advanced:
        rows.append((topic, BucketsAdvanced(buckets=dict(advanced), committed_at=time.time()).envelope(min(advanced))))
    user_ids = sorted(set(users))
    if user_ids:
        rows.append((topic, UserBucketsChanged(user_ids=user_ids).envelope(user_ids[0])))
    await outbox.enqueue_many(conn, SCHEMA, rows)
