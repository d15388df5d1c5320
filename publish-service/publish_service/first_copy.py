"""The first copy of an entity's records from data.records (read-only) into record_index, once per
entity: afterwards every RecordChanged keeps the index current.

An entity copied for the first time gets a partition of its own (migration 005): a new table,
filled by one ``INSERT … SELECT`` and given its primary key afterwards, in one sorted build,
then attached. Inserting the same rows into an existing b-tree costs about twice the CPU
(docs/performance.md, "publish", round five). Rows of the entity that RecordChanged indexed
before the copy sit in the default partition; they move into the new one and win over the
copy, as a row already indexed always does: it holds the version every bucket's put refers to.

An entity that already has a partition (a table from before migration 005 holds several) is
copied the old way: a plain insert of the rows the index lacks, split over connections by heap
page range.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Mapping

import asyncpg

from publish_service.bucket_writes import INDEX_COLS, PARALLELISM
from publish_service.rules.conditions import sql_literal

log = logging.getLogger(__name__)

DEFAULT_PARTITION = "sync.record_index_rest"
# What the planner needs after a first copy: the columns materialization filters and joins on.
# Not attributes: the queries read it only through ->> (no statistics used), and its statistics
# (sorting ~30k jsonb values) took about half of the ANALYZE (0.75-1.05 s against 0.52 s after
# a 752k-row copy); autovacuum gathers them later.
_ANALYZE_COLS = "(entity, record_id, version, deleted, owner_id, owner_type, business_unit_id, created_at, modified_at)"
ANALYZE_AFTER_ROWS = 5000  # above this many freshly copied rows, statistics are refreshed before joining
_SELECT = (
    "SELECT d.entity, d.id, d.version, d.deleted, d.owner_id, d.owner_type, d.business_unit_id, d.attributes, "
    "d.created_at, d.modified_at FROM data.records d"
)
# The parent's other indexes, as the new partition needs them: built before the attach, which
# would otherwise build them while it holds the default partition's lock (readers wait on it).
_PARENT_INDEXES = """
    SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
    WHERE i.indrelid = 'sync.record_index'::regclass AND NOT i.indisprimary
    """
_ON_PARENT = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY sync\.record_index ")
# The copy lost a race (another worker made the partition first) or the entity turned out to
# have a partition after all: the transaction is rolled back and the old way copies what is missing.
_LOST = (asyncpg.DuplicateTableError, asyncpg.InvalidObjectDefinitionError)


def partition_name(entity: str) -> str:
    """A readable, unique, unquoted identifier for ``entity``'s partition (at most 63 bytes)."""
    readable = re.sub(r"[^a-z0-9_]", "_", entity.lower())[:40]
    return f"record_index_{readable}_{hashlib.md5(entity.encode()).hexdigest()[:8]}"


def deal(sizes: Mapping[str, int], parts: int) -> list[list[str]]:
    """Entities dealt into at most ``parts`` groups of about equal rows: largest first, each
    to the lightest group (within 4/3 of the best split), the one with fewer entities on a tie
    (so unknown sizes, all 0, go round). Groups are never empty."""
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, min(parts, len(sizes))))]
    for entity in sorted(sizes, key=lambda e: (-sizes[e], e)):
        k = min(range(len(groups)), key=lambda i: (groups[i][0], len(groups[i][1]), i))
        load, members = groups[k]
        groups[k] = (load + sizes[entity], [*members, entity])
    return [members for _, members in groups if members]


async def unmirrored(conn: asyncpg.Connection, entities: Iterable[str]) -> list[str]:
    return sorted(set(entities) - {r["entity"] for r in await conn.fetch("SELECT entity FROM sync.mirrored_entities")})


async def _own_partitions(conn: asyncpg.Connection, entities: list[str]) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT entity, partition FROM sync.record_index_partitions WHERE entity = ANY($1::text[])", entities
    )
    return {r["entity"]: r["partition"] for r in rows}


async def _estimated_rows(conn: asyncpg.Connection, entities: list[str]) -> dict[str, int]:
    """Rows per entity in data.records from the planner's statistics (no scan); 0 when unknown."""
    rows = await conn.fetch(
        """SELECT v.entity, (v.freq * c.reltuples)::bigint AS n
           FROM pg_stats s, pg_class c,
                unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(entity, freq)
           WHERE s.schemaname = 'data' AND s.tablename = 'records' AND s.attname = 'entity'
             AND c.oid = 'data.records'::regclass""",
    )
    known = {r["entity"]: max(0, int(r["n"])) for r in rows}
    return {e: known.get(e, 0) for e in entities}


async def _mark_mirrored(conn: asyncpg.Connection, entities: list[str]) -> None:
    await conn.execute("INSERT INTO sync.mirrored_entities SELECT unnest($1::text[]) ON CONFLICT DO NOTHING", entities)


async def _copy_into_new_partition(conn: asyncpg.Connection, entity: str) -> int | None:
    """Copy ``entity`` into a partition of its own and mark it mirrored, in one transaction
    (a savepoint inside the caller's). Returns the rows copied that the index lacked; None when it lost a race or the
    entity has a partition already, having changed nothing."""
    name = f"sync.{partition_name(entity)}"
    lit = sql_literal(entity)
    try:
        async with conn.transaction():
            # The CHECK lets the attach skip scanning the new table for rows of other entities.
            await conn.execute(
                f"CREATE TABLE {name} (LIKE sync.record_index INCLUDING DEFAULTS, CHECK (entity = {lit}))"
            )
            status = await conn.execute(f"INSERT INTO {name}({INDEX_COLS}) {_SELECT} WHERE d.entity = {lit}")
            await conn.execute(f"ALTER TABLE {name} ADD PRIMARY KEY (entity, record_id)")
            for (ddl,) in await conn.fetch(_PARENT_INDEXES):
                await conn.execute(_ON_PARENT.sub(lambda m: f"CREATE {m.group(1) or ''}INDEX ON {name} ", ddl))
            # From here until the commit no one writes the default partition: rows RecordChanged
            # indexed there before the copy move over, replacing the copied ones.
            await conn.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
            replaced = await conn.fetchval(
                f"""WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE entity = {lit} RETURNING {INDEX_COLS}),
                    put AS (
                        INSERT INTO {name}({INDEX_COLS}) SELECT {INDEX_COLS} FROM moved
                        ON CONFLICT (entity, record_id) DO UPDATE SET version = EXCLUDED.version,
                            deleted = EXCLUDED.deleted, owner_id = EXCLUDED.owner_id,
                            owner_type = EXCLUDED.owner_type, business_unit_id = EXCLUDED.business_unit_id,
                            attributes = EXCLUDED.attributes, created_at = EXCLUDED.created_at,
                            modified_at = EXCLUDED.modified_at
                        RETURNING xmax <> 0 AS updated)
                    SELECT count(*) FILTER (WHERE updated) FROM put"""
            )
            await conn.execute(f"ALTER TABLE sync.record_index ATTACH PARTITION {name} FOR VALUES IN ({lit})")
            await conn.execute(
                "INSERT INTO sync.record_index_partitions VALUES ($1, $2)", entity, partition_name(entity)
            )
            await _mark_mirrored(conn, [entity])
    except _LOST as e:
        log.info("first copy into a new partition not done", extra={"entity": entity, "reason": str(e)})
        return None
    return int(status.split()[-1]) - replaced  # the rows the index lacked, as the old way counts


async def _copy_missing(
    conn: asyncpg.Connection, entities: list[str], pages: tuple[int, int | None] | None = None
) -> int:
    """Copy the ``entities``' records the index lacks (only those stored in the heap page range
    ``pages`` of data.records, end open when None); returns the number of rows copied."""
    where = "d.entity = ANY($1::text[])"
    args: list[object] = [entities]
    if pages is not None:
        lo, hi = pages
        where += " AND d.ctid >= format('(%s,0)', $2::bigint)::tid"
        args.append(lo)
        if hi is not None:
            where += " AND d.ctid < format('(%s,0)', $3::bigint)::tid"
            args.append(hi)
    copy = f"INSERT INTO sync.record_index({INDEX_COLS}) {_SELECT} WHERE {where} "
    try:
        # A plain insert of the rows the index lacks costs about half of an ON CONFLICT insert
        # (no speculative insertion). A RecordChanged indexing one of them concurrently (outside
        # our ops lock) makes it fail: then the upsert, which tolerates that, does the copy.
        async with conn.transaction():
            status = await conn.execute(
                copy
                + "AND NOT EXISTS (SELECT 1 FROM sync.record_index x WHERE x.entity = d.entity AND x.record_id = d.id)",
                *args,
            )
    except asyncpg.UniqueViolationError:
        status = await conn.execute(copy + "ON CONFLICT (entity, record_id) DO NOTHING", *args)
    return int(status.split()[-1])


async def _analyze(conn: asyncpg.Connection, tables: Iterable[str]) -> None:
    """Statistics of the partitions a first copy filled: the publish's queries name the entity,
    so each reads one partition and plans with its statistics."""
    await conn.execute("ANALYZE " + ", ".join(f"{t} {_ANALYZE_COLS}" for t in sorted(set(tables))))


async def _partitions_of(conn: asyncpg.Connection, entities: list[str]) -> list[str]:
    held = await _own_partitions(conn, entities)
    return sorted({f"sync.{p}" for p in held.values()} | ({DEFAULT_PARTITION} if len(held) < len(entities) else set()))


async def mirror_records(conn: asyncpg.Connection, entities: Iterable[str], analyze: bool = True) -> int:
    """Copy the unmirrored ``entities`` on ``conn`` (inside the caller's transaction, if any);
    returns the rows copied. Rows already indexed are left alone (they change only through the
    incremental path, so the index always holds the version every bucket's put refers to); so
    this is safe outside the ops lock too."""
    todo = await unmirrored(conn, entities)
    if not todo:
        return 0
    own = await _own_partitions(conn, todo)
    copied = 0
    for entity in todo:
        n = None if entity in own else await _copy_into_new_partition(conn, entity)
        if n is None:
            n = await _copy_missing(conn, [entity])
            await _mark_mirrored(conn, [entity])
        copied += n
    if analyze and copied > ANALYZE_AFTER_ROWS:
        await _analyze(conn, await _partitions_of(conn, todo))
    return copied


async def premirror(pool: asyncpg.Pool, entities: Iterable[str], parts: int = PARALLELISM) -> None:
    """Mirror entities before a publish's transaction, over up to ``parts`` connections: the copy
    dominates a first publish and parallelizes across cores.

    New partitions are filled one per entity, entities dealt over the connections by size.
    Entities that have a partition already are split by heap page range of data.records; each
    part copies from its own snapshot. A record updated between two parts' snapshots can move to
    a page range already read, and so be copied by neither; its update's RecordChanged indexes it
    (the incremental path indexes every record it touches), as it would a record updated after a
    single copy's snapshot. Those entities are marked mirrored once every part has committed: a
    failed part leaves them unmarked and the next publish copies what is missing."""
    async with pool.acquire() as conn:
        todo = await unmirrored(conn, entities)
        if not todo:
            return
        own = await _own_partitions(conn, todo)
        fresh = [e for e in todo if e not in own]
        sizes = await _estimated_rows(conn, fresh)
        pages = int(
            await conn.fetchval("SELECT pg_relation_size('data.records') / current_setting('block_size')::bigint")
        )
    t0 = time.perf_counter()

    async def new_partitions(group: list[str]) -> tuple[int, list[str]]:
        # Each connection analyzes the partitions it filled: the statistics overlap the other copies.
        copied, lost, filled = 0, [], []
        async with pool.acquire() as conn:
            for entity in group:
                n = await _copy_into_new_partition(conn, entity)
                if n is None:
                    lost.append(entity)
                    continue
                copied += n
                if n > ANALYZE_AFTER_ROWS:
                    filled.append(f"sync.{partition_name(entity)}")
            if filled:
                await _analyze(conn, filled)
        return copied, lost

    done = await asyncio.gather(*(new_partitions(g) for g in deal(sizes, parts)))
    copied = sum(n for n, _ in done)
    rest = sorted({*own, *(e for _, lost in done for e in lost)})
    if not rest:
        if copied:
            log.info("records mirrored", extra={"rows": copied, "seconds": round(time.perf_counter() - t0, 3)})
        return
    step = -(-pages // max(1, parts))
    ranges = [(k * step, (k + 1) * step if k < parts - 1 else None) for k in range(max(1, parts))]

    async def part(rng: tuple[int, int | None]) -> int:
        async with pool.acquire() as conn:
            return await _copy_missing(conn, rest, rng)

    missing = sum(await asyncio.gather(*(part(r) for r in ranges)))
    async with pool.acquire() as conn:
        await _mark_mirrored(conn, rest)
        if missing > ANALYZE_AFTER_ROWS:
            await _analyze(conn, await _partitions_of(conn, rest))
    log.info("records mirrored", extra={"rows": copied + missing, "seconds": round(time.perf_counter() - t0, 3)})
