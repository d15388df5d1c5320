"""The first copy of an entity's records from data.records (read-only) into record_index, once per
entity: afterwards every RecordChanged keeps the index current.

Two ways, the cheaper for the rows at hand:
- **Rebuild** (an index still small beside what the copy brings, typically an org's first
  publish): the records go into a new table with no index, over several connections; its
  indexes are built once, sorted, and it replaces record_index in one short transaction that
  also carries over every row the old table holds (those win over copied ones: an indexed row
  holds the version every bucket's put refers to). Inserting the same rows one by one into the
  b-tree costs about twice the CPU (docs/performance.md, "publish", round five).
- **Insert** (otherwise): a plain insert of the rows the index lacks, split over connections by
  heap page range of data.records.

record_index stays one plain table: partitioned by entity, every read of the change path that
joins it by key initialized an index scan per partition (+80 µs a statement, measured).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

import asyncpg

from publish_service import table_swap
from publish_service.bucket_writes import ANALYZE_AFTER_ROWS, INDEX_COLS, PARALLELISM

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# What the planner needs after a first copy: the columns materialization filters and joins on.
# Not attributes: the queries read it only through ->> (no statistics used), and its statistics
# (sorting ~30k jsonb values) took about half of the ANALYZE (0.75-1.05 s against 0.52 s after
# a 752k-row copy); autovacuum gathers them later.
_ANALYZE_COLS = "(entity, record_id, version, deleted, owner_id, owner_type, business_unit_id, created_at, modified_at)"
TABLE = "sync.record_index"
NEXT = table_swap.next_of(TABLE)
_SELECT = (
    "SELECT d.entity, d.id, d.version, d.deleted, d.owner_id, d.owner_type, d.business_unit_id, d.attributes, "
    "d.created_at, d.modified_at FROM data.records d"
)
# One first copy at a time (two publish workers may start one together): a session lock, held
# from the choice of way to the end of the copy.
_LOCK = "hashtext('sync:first-copy')"
# The old table's rows win over copied ones; how many it replaced.
_CARRY = f"""WITH put AS (
        INSERT INTO {NEXT}({INDEX_COLS}) SELECT {INDEX_COLS} FROM {TABLE}
        ON CONFLICT (entity, record_id) DO UPDATE SET version = EXCLUDED.version,
            deleted = EXCLUDED.deleted, owner_id = EXCLUDED.owner_id, owner_type = EXCLUDED.owner_type,
            business_unit_id = EXCLUDED.business_unit_id, attributes = EXCLUDED.attributes,
            created_at = EXCLUDED.created_at, modified_at = EXCLUDED.modified_at
        RETURNING xmax <> 0 AS updated)
    SELECT count(*) FILTER (WHERE updated) FROM put"""


async def _unmirrored(conn: asyncpg.Connection, entities: Iterable[str]) -> list[str]:
    return sorted(set(entities) - {r["entity"] for r in await conn.fetch("SELECT entity FROM sync.mirrored_entities")})


async def _mark_mirrored(conn: asyncpg.Connection, entities: list[str]) -> None:
    await conn.execute("INSERT INTO sync.mirrored_entities SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", entities)


async def _analyze(conn: asyncpg.Connection, table: str = "sync.record_index") -> None:
    await conn.execute(f"ANALYZE {table} {_ANALYZE_COLS}")


def _where(pages: tuple[int, int | None] | None) -> tuple[str, list[object]]:
    """The copy's filter on data.records: the entities ($1), and the heap page range ``pages``
    (end open when None)."""
    where = "d.entity = ANY($1::text[])"
    args: list[object] = []
    if pages is not None:
        lo, hi = pages
        where += " AND d.ctid >= format('(%s,0)', $2::bigint)::tid"
        args.append(lo)
        if hi is not None:
            where += " AND d.ctid < format('(%s,0)', $3::bigint)::tid"
            args.append(hi)
    return where, args


def _page_ranges(pages: int, parts: int) -> list[tuple[int, int | None]]:
    step = -(-pages // max(1, parts))
    return [(k * step, (k + 1) * step if k < parts - 1 else None) for k in range(max(1, parts))]


async def _copy_missing(
    conn: asyncpg.Connection, entities: list[str], pages: tuple[int, int | None] | None = None
) -> int:
    """Insert way: copy the ``entities``' records the index lacks (only those in the heap page
    range ``pages`` of data.records); returns the number of rows copied."""
    where, args = _where(pages)
    copy = f"INSERT INTO sync.record_index({INDEX_COLS}) {_SELECT} WHERE {where} "
    try:
        # A plain insert of the rows the index lacks costs about half of an ON CONFLICT insert
        # (no speculative insertion). A RecordChanged indexing one of them concurrently (outside
        # our ops lock) makes it fail: then the upsert, which tolerates that, does the copy.
        async with conn.transaction():
            status = await conn.execute(
                copy
                + "AND NOT EXISTS (SELECT 1 FROM sync.record_index x WHERE x.entity = d.entity AND x.record_id = d.id)",
                entities,
                *args,
            )
    except asyncpg.UniqueViolationError:
        status = await conn.execute(copy + "ON CONFLICT (entity, record_id) DO NOTHING", entities, *args)
    return int(status.split()[-1])


async def mirror_records(conn: asyncpg.Connection, entities: Iterable[str], analyze: bool = True) -> int:
    """Copy the unmirrored ``entities`` the insert way on ``conn`` (inside the caller's
    transaction, if any); returns the rows copied. Rows already indexed are left alone (they
    change only through the incremental path, so the index always holds the version every
    bucket's put refers to); so this is safe outside the ops lock too."""
    todo = await _unmirrored(conn, entities)
    if not todo:
        return 0
    n = await _copy_missing(conn, todo)
    await _mark_mirrored(conn, todo)
    if analyze and n > ANALYZE_AFTER_ROWS:
        await _analyze(conn)
    return n


async def rebuild_pays(conn: asyncpg.Connection, entities: list[str]) -> bool:
    return await table_swap.rebuild_pays(conn, TABLE, "data.records", entities)


class _Connections:
    """Where the parts of a copy run: the connection that holds the first-copy lock, and up to
    ``parts - 1`` more of the pool's as they come free. The caller may hold pool connections
    itself, so none is waited for once the lock's connection has taken the last part."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection, parts: int) -> None:
        self.pool = pool
        self.conn = conn
        self.parts = max(1, parts)

    async def each(self, work: Callable[[asyncpg.Connection, T], Awaitable[R]], items: Iterable[T]) -> list[R]:
        """``work`` for every item, on as many connections as there are parts and free ones."""
        todo = deque(enumerate(items))
        out: dict[int, R] = {}

        async def drain(c: asyncpg.Connection) -> None:
            while todo:
                k, item = todo.popleft()
                out[k] = await work(c, item)

        working: set[asyncio.Task[None] | None] = set()  # helpers that got a connection

        async def helper() -> None:
            async with self.pool.acquire() as c:
                working.add(asyncio.current_task())
                await drain(c)

        helpers = [asyncio.create_task(helper()) for _ in range(min(self.parts, len(todo)) - 1)]
        try:
            await drain(self.conn)
        finally:
            for h in helpers:
                if h not in working:
                    h.cancel()
            done = await asyncio.gather(*helpers, return_exceptions=True)
        for r in done:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r
        return [out[k] for k in sorted(out)]


async def _rebuild(
    on: _Connections, todo: list[str], ranges: list[tuple[int, int | None]], wanted: Mapping[str, str]
) -> int:
    """Rebuild way (see the module's docstring); ``on.conn`` holds the first-copy lock. The
    ``wanted`` indexes record_index lacks are built with its own."""
    conn = on.conn
    before = await table_swap.indexes(conn, TABLE)
    built = {**{n: table_swap.Index(n, False, ddl) for n, ddl in wanted.items() if n not in before}, **before}
    await table_swap.create_next(conn, TABLE)

    async def fill(c: asyncpg.Connection, rng: tuple[int, int | None]) -> int:
        where, args = _where(rng)
        status = await c.execute(f"INSERT INTO {NEXT}({INDEX_COLS}) {_SELECT} WHERE {where}", todo, *args)
        return int(status.split()[-1])

    copied = sum(await on.each(fill, ranges))

    async def build(c: asyncpg.Connection, idx: table_swap.Index) -> None:
        await table_swap.build(c, idx, TABLE)

    # Spread over the connections (CREATE INDEX locks share), the key (the largest) first.
    await on.each(build, sorted(built.values(), key=lambda i: not i.pk))
    await _analyze(conn, NEXT)
    async with conn.transaction():
        # No op writer is in flight (each writes the index under the ops lock), and no reader
        # once the swap has the table.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sync:ops'))")
        # A publish of another worker may have made a link index meanwhile: the swap makes it too.
        replaced = await table_swap.swap(conn, TABLE, before, built, _CARRY)
        await _mark_mirrored(conn, todo)
    return copied - int(replaced)  # the rows the index lacked, as the insert way counts


async def premirror(
    pool: asyncpg.Pool, entities: Iterable[str], parts: int = PARALLELISM, indexes: Mapping[str, str] | None = None
) -> None:
    """Mirror entities before a publish's transaction, over up to ``parts`` connections: the copy
    dominates a first publish and parallelizes across cores. ``indexes``: more indexes of
    record_index (name -> CREATE INDEX DDL) the publish will want, its link indexes; a rebuild
    builds them beside its own instead of the publish's transaction after it, alone (the insert
    way leaves them to the publish).

    Each part copies from its own snapshot. A record updated between two parts' snapshots can
    move to a page range already read, and so be copied by neither; its update's RecordChanged
    indexes it (the incremental path indexes every record it touches), as it would a record
    updated after a single copy's snapshot. The entities are marked mirrored once every part
    has committed: a failed part leaves them unmarked and the next publish copies what is
    missing."""
    async with pool.acquire() as conn:
        if not await _unmirrored(conn, entities):
            return
        await conn.execute(f"SELECT pg_advisory_lock({_LOCK})")
        try:
            todo = await _unmirrored(conn, entities)  # another worker may have copied them meanwhile
            if not todo:
                return
            pages = int(
                await conn.fetchval("SELECT pg_relation_size('data.records') / current_setting('block_size')::bigint")
            )
            on = _Connections(pool, conn, parts)
            ranges = _page_ranges(pages, on.parts)
            t0 = time.perf_counter()
            if await rebuild_pays(conn, todo):
                way, copied = "rebuild", await _rebuild(on, todo, ranges, indexes or {})
            else:

                async def part(c: asyncpg.Connection, rng: tuple[int, int | None]) -> int:
                    return await _copy_missing(c, todo, rng)

                way, copied = "insert", sum(await on.each(part, ranges))
                await _mark_mirrored(conn, todo)
                if copied > ANALYZE_AFTER_ROWS:
                    await _analyze(conn)
        finally:
            await conn.execute(f"SELECT pg_advisory_unlock({_LOCK})")
    if copied:
        log.info("records mirrored", extra={"rows": copied, "way": way, "seconds": round(time.perf_counter() - t0, 3)})
