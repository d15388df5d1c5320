"""The bucket store: writes ops, checksums and bucket rows of the sync schema, set-wise.

Every writer calls :func:`lock_ops` first in its transaction: op writers serialize on one
advisory lock from op-id allocation to commit, so committed op ids always form a prefix and a
reader never skips an op that commits later (docs/architecture.md, failure mode 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby

import asyncpg

from offsync_shared import ops_hint, outbox
from offsync_shared.checksum import SQL_OP_HASH, op_hash
from offsync_shared.events.sync_notify import BucketsAdvanced, UserBucketsChanged
from publish_service import ops_rebuild
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
# Above this many freshly written rows (copied records, filled ops) the planner's statistics are
# refreshed before joining them.
ANALYZE_AFTER_ROWS = 5000
# Connections a publish's bulk work (the first copy of records, the fill of new buckets) is split
# over: the machine's cores (two here), PostgreSQL doing the work.
PARALLELISM = 2
WORK_MEM = "256MB"
OPS = "sync.bucket_ops"
INDEX_COLS = (
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


class Laps:
    """Seconds per step, by name, each since the one before (into ``laps`` when given)."""

    def __init__(self, laps: dict[str, float] | None = None) -> None:
        self.laps: dict[str, float] = {} if laps is None else laps
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


_LOCK_OPS = "SELECT pg_advisory_xact_lock(hashtext('sync:ops'))"


async def lock_ops(conn: asyncpg.Connection) -> None:
    await conn.execute(_LOCK_OPS)


@contextlib.asynccontextmanager
async def ops_transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A transaction that holds the ops lock from its start, committed when the block ends
    normally: ``BEGIN`` and the lock in one round trip, where ``conn.transaction()`` and
    :func:`lock_ops` take two (a live change's path counts them: docs/performance.md). Inside it
    ``conn.transaction()`` is refused, as in any transaction asyncpg did not start."""
    try:
        await conn.execute(f"BEGIN; {_LOCK_OPS}")
        yield
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            with contextlib.suppress(Exception):  # a broken connection: the pool's reset ends it
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


_OPS_UPSERT = """
    INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
    SELECT b, e, r, nextval('sync.op_id_seq'), o, v
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS t(b, e, r, o, v)
    ON CONFLICT (bucket_id, entity, record_id)
    DO UPDATE SET op_id = EXCLUDED.op_id, op = EXCLUDED.op, version = EXCLUDED.version
    RETURNING bucket_id, op_id
"""


_BUCKETS_UPDATE = """
    UPDATE sync.buckets b SET checksum = ((b.checksum + d.delta) % 4294967296 + 4294967296) % 4294967296,
           record_count = b.record_count + d.dc, last_op_id = GREATEST(b.last_op_id, d.maxop)
    FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS d(id, delta, dc, maxop)
    WHERE b.id = d.id
    """


class BucketMoves:
    """What a transaction's ops do to their buckets' rows: checksum and count deltas and the
    newest op id, per bucket, written by one ``UPDATE sync.buckets`` (:meth:`write`, or inside
    :func:`notify`'s statement, one round trip less)."""

    def __init__(self) -> None:
        self.delta: defaultdict[str, int] = defaultdict(int)
        self.count: defaultdict[str, int] = defaultdict(int)
        self.newest: dict[str, int] = {}

    def add(self, ops: list[Op], written: Iterable[asyncpg.Record]) -> dict[str, int]:
        """Note ``ops`` and their rows as the upsert returned them; the newest op id of each
        bucket they touched."""
        newest: dict[str, int] = {}
        for r in written:
            newest[r["bucket_id"]] = max(newest.get(r["bucket_id"], 0), r["op_id"])
        for b, op_id in newest.items():
            self.newest[b] = max(self.newest.get(b, 0), op_id)
        delta, count = self.delta, self.count
        for o in ops:
            if o.old_version is not None:
                delta[o.bucket_id] -= op_hash(o.entity, o.record_id, o.old_version)
                count[o.bucket_id] -= 1
            if o.op == "put":
                delta[o.bucket_id] += op_hash(o.entity, o.record_id, o.version)
                count[o.bucket_id] += 1
        return newest

    def update(self) -> outbox.Also | None:
        """The ``UPDATE`` as a statement for another to run (outbox.insert_rows); None if empty."""
        if not self.newest:
            return None
        ids = sorted(self.newest)
        return outbox.statement(
            _BUCKETS_UPDATE,
            [ids, [self.delta[i] % MOD for i in ids], [self.count[i] for i in ids], [self.newest[i] for i in ids]],
        )

    async def write(self, conn: asyncpg.Connection) -> None:
        stmt = self.update()
        if stmt is not None:
            await conn.execute(stmt.sql(1), *stmt.args)


async def write_ops(
    conn: asyncpg.Connection, ops: list[Op], index: list[Record] | None = None, moves: BucketMoves | None = None
) -> dict[str, int]:
    """Upsert compacted ops with fresh op ids and apply their checksum/count deltas (to ``moves``
    when given, for the caller to write later); with ``index``, upsert those records' index rows
    in the same statement (one round trip less). Returns bucket id -> newest op id."""
    if not ops:
        if index:
            await upsert_index(conn, index)
        return {}
    args = [
        [o.bucket_id for o in ops],
        [o.entity for o in ops],
        [o.record_id for o in ops],
        [o.op for o in ops],
        [o.version for o in ops],
    ]
    if index:
        # Two tables, no reads between them: a data-modifying CTE runs to completion either way.
        sql = f"WITH i AS ({outbox.renumbered(_INDEX_UPSERT, len(args) + 1)}) {_OPS_UPSERT}"
        args += _index_args(index)
    else:
        sql = _OPS_UPSERT
    rows = await conn.fetch(sql, *args)
    if moves is not None:
        return moves.add(ops, rows)
    mine = BucketMoves()
    newest = mine.add(ops, rows)
    await mine.write(conn)
    return newest


# The index upsert; its ten parameters are :func:`_index_args`.
_INDEX_UPSERT = f"""
    INSERT INTO sync.record_index({INDEX_COLS})
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[], $5::text[],
                         $6::text[], $7::text[], $8::jsonb[], $9::timestamptz[], $10::timestamptz[])
    ON CONFLICT (entity, record_id) DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted,
        owner_id = EXCLUDED.owner_id, owner_type = EXCLUDED.owner_type,
        business_unit_id = EXCLUDED.business_unit_id, attributes = EXCLUDED.attributes,
        created_at = COALESCE(EXCLUDED.created_at, sync.record_index.created_at), modified_at = EXCLUDED.modified_at
    WHERE sync.record_index.version < EXCLUDED.version
    """


def _index_args(recs: list[Record]) -> list[list[object]]:
    # In key order: each row's descent into the primary key lands near the one before.
    recs = sorted(recs, key=lambda r: (r.entity, r.id))
    return [
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
    ]


async def upsert_index(conn: asyncpg.Connection, recs: list[Record]) -> None:
    if recs:
        await conn.execute(_INDEX_UPSERT, *_index_args(recs))


class _Helpers:
    """Where materialization's statements run: on the reconcile's own connection (inside its
    transaction), or, with a pool, on helper connections in transactions of their own that
    commit before the reconcile goes on, so that a family's buckets fill on several cores.

    Helpers run while the reconcile holds the ops lock, so no other op writer runs meanwhile, and
    they write only ops of buckets that do not exist yet (no sync.buckets row, hence no member,
    no reader and not in any registry): the reconcile inserts the bucket rows, with the
    checksums the helpers computed, in its own transaction. If the reconcile then fails, the
    ops stay behind unreachable; the next materialization of those ids deletes them first.
    Helpers must not wait for anything the reconcile's transaction holds, so they only run
    when it has written nothing they touch (no bucket_ops row, no record_index row)."""

    def __init__(self, conn: asyncpg.Connection, pool: asyncpg.Pool | None, parts: int) -> None:
        self.conn = conn
        # The reconcile holds one of the pool's connections: with no other, a helper would wait
        # for it forever.
        self.pool = pool if pool is not None and pool.get_max_size() >= 2 else None
        self.parts = parts if self.pool is not None else 1

    async def run(self, sql: str, *args: object) -> None:
        if self.pool is None:
            await self.conn.execute(sql, *args)
            return
        async with self.pool.acquire() as c:
            await c.execute(sql, *args)

    async def fill(self, fam: list[BucketDef], into: str = OPS) -> list[asyncpg.Record]:
        if self.pool is None:
            return await _fill_family(self.conn, fam, into)
        pool = self.pool
        # Round-robin over the family's buckets (sorted by id: sizes are unrelated to the order).
        chunks = [c for c in (fam[k :: self.parts] for k in range(self.parts)) if c]

        async def one(chunk: list[BucketDef]) -> list[asyncpg.Record]:
            async with pool.acquire() as c, c.transaction():
                await c.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
                return await _fill_family(c, chunk, into)

        return [r for rows in await asyncio.gather(*(one(c) for c in chunks)) for r in rows]


async def materialize(
    conn: asyncpg.Connection,
    defs: list[BucketDef],
    timings: dict[str, float] | None = None,
    pool: asyncpg.Pool | None = None,
    parts: int = PARALLELISM,
) -> int:
    """Create new buckets and fill them set-wise (one statement per bucket family, base buckets
    before the buckets derived from them; with ``pool``, each family split over ``parts``
    helper connections, see :class:`_Helpers`, and bucket_ops rebuilt when that pays, see
    publish_service.ops_rebuild). Returns the number of ops written."""
    if not defs:
        return 0
    helpers = _Helpers(conn, pool, parts)
    # Big set-wise joins and sorts: keep them in memory for this transaction only.
    await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    ids = [d.id for d in defs]
    laps = Laps(timings)
    if helpers.pool is not None and await ops_rebuild.pays(conn, (d.entity for d in defs)):
        rebuilt: ops_rebuild.OpsRebuild | None = await ops_rebuild.OpsRebuild.start(helpers.pool, parts, ids)
    else:
        rebuilt = None
        # Ops a failed earlier materialization of these ids left behind (see _Helpers).
        await helpers.run(f"DELETE FROM {OPS} WHERE bucket_id = ANY($1::text[])", ids)
    laps.lap("ops:start")
    try:
        stats = await _fill(helpers, defs, rebuilt, laps)
        if rebuilt is not None:
            await rebuilt.build(rebuilt.before.values())
            laps.lap("ops:indexes")
    except BaseException:
        if rebuilt is not None:
            await rebuilt.abandon()
        raise
    written = sum(n for _, n, _ in stats.values())
    if rebuilt is not None:
        await rebuilt.swap(conn)
        laps.lap("ops:swap")
        log.info("bucket_ops rebuilt", extra={"new_buckets": len(defs), "ops": written})
    empty = (0, 0, 0)
    await conn.execute(
        """INSERT INTO sync.buckets(id, definition, checksum, record_count, last_op_id)
           SELECT * FROM unnest($1::text[], $2::jsonb[], $3::bigint[], $4::bigint[], $5::bigint[])
           ON CONFLICT DO NOTHING""",
        ids,
        [d.definition() for d in defs],
        [stats.get(d.id, empty)[0] for d in defs],
        [stats.get(d.id, empty)[1] for d in defs],
        [stats.get(d.id, empty)[2] for d in defs],
    )
    return written


async def _fill(
    helpers: _Helpers, defs: list[BucketDef], rebuilt: ops_rebuild.OpsRebuild | None, laps: Laps
) -> dict[str, tuple[int, int, int]]:
    """Every family's ops, into bucket_ops or the rebuild's next table; each non-empty bucket's
    checksum, count and last op id."""
    into = ops_rebuild.NEXT if rebuilt is not None else OPS
    for ddl in link_indexes(defs).values():
        await helpers.run(ddl)
    laps.lap("links")
    written = 0
    stats: dict[str, tuple[int, int, int]] = {}
    ordered = sorted(defs, key=lambda d: (depth_of(d), d.family, d.id))
    for depth, at_depth in groupby(ordered, key=depth_of):
        if depth > 0:
            # Built over the parents' fresh puts (cheaper than maintaining it row by row); a no-op
            # once it exists.
            if rebuilt is not None:
                await rebuilt.build_ddl(parent_indexes(defs))
            else:
                for ddl in parent_indexes(defs).values():
                    await helpers.run(ddl)
        if depth > 0 and written > ANALYZE_AFTER_ROWS:
            await helpers.run(f"ANALYZE {into}")
        if depth > 0:
            laps.lap(f"parents:{depth}")
        for _, fam_iter in groupby(at_depth, key=lambda d: d.family):
            fam = list(fam_iter)
            for r in await helpers.fill(fam, into):
                stats[r["bucket_id"]] = (int(r["checksum"]), int(r["n"]), int(r["last_op"]))
                written += int(r["n"])
            laps.lap(f"{fam[0].entity}:{fam[0].filter['k']}:{fam[0].access}")
    return stats


async def _fill_family(conn: asyncpg.Connection, fam: list[BucketDef], into: str = OPS) -> list[asyncpg.Record]:
    """Insert the puts of a family's new buckets into ``into``; returns each non-empty bucket's
    checksum, count and last op id, computed from the inserted rows in the same statement (no
    second pass). The rows go in key order: into bucket_ops each row's descent into the b-trees
    lands near the one before, and in either table a bucket's ops lie together in the heap, where
    a device's download reads them (a rebuilt table filled unordered cost initial_sync ~8 % and
    the change path's p50 ~1 ms in `make bench`)."""
    h = SQL_OP_HASH.format(entity="i.entity", id="i.record_id", version="i.version")
    return await conn.fetch(
        f"""
        WITH i AS (
            INSERT INTO {into}(bucket_id, entity, record_id, op_id, op, version)
            SELECT s.bucket_id, s.entity, s.record_id, nextval('sync.op_id_seq'), 'put', s.version
            FROM ({sql_family_select(fam[0], "$1", ops=into)} ORDER BY 1, 2, 3) s
            RETURNING bucket_id, entity, record_id, op_id, version
        )
        SELECT i.bucket_id, sum({h}) % 4294967296 AS checksum, count(*) AS n, max(i.op_id) AS last_op
        FROM i GROUP BY i.bucket_id
        """,
        param_rows(fam),
    )


async def drop_buckets(conn: asyncpg.Connection, ids: list[str]) -> None:
    if ids:
        await conn.execute("DELETE FROM sync.bucket_ops WHERE bucket_id = ANY($1::text[])", ids)
        await conn.execute("DELETE FROM sync.buckets WHERE id = ANY($1::text[])", ids)


async def bump_generation(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE sync.registry_generation SET generation = generation + 1")


async def load_defs(conn: asyncpg.Connection) -> list[BucketDef]:
    return [
        BucketDef.from_definition(r["id"], r["definition"])
        for r in await conn.fetch("SELECT id, definition FROM sync.buckets")
    ]


async def notify(
    conn: asyncpg.Connection,
    topic: str,
    advanced: Mapping[str, int],
    users: Iterable[str] = (),
    *,
    hint: bool = False,
    moves: BucketMoves | None = None,
) -> None:
    """Tell sync gateways, in this transaction, which buckets advanced and whose bucket set changed;
    with ``hint`` also by an ops hint at the commit (gateways listen for it where the stack has
    the doorbell, so a stack without one does not pay its round trip). ``moves``, the ops'
    effect on their bucket rows not yet written, is written by the same statement."""
    rows = []
    if advanced:
        rows.append((topic, BucketsAdvanced(buckets=dict(advanced), committed_at=time.time()).envelope(min(advanced))))
    user_ids = sorted(set(users))
    if user_ids:
        rows.append((topic, UserBucketsChanged(user_ids=user_ids).envelope(user_ids[0])))
    update = moves.update() if moves is not None else None
    await outbox.enqueue_many(
        conn, SCHEMA, rows, [ops_hint.notice(advanced)] if hint else [], [update] if update else []
    )
