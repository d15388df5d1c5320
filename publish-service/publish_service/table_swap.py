"""Replacing a sync table by a rebuilt copy of it: the rows go into ``<table>_next`` with no index,
its indexes are built once each, sorted, and one short transaction puts it in the old table's
place. Filling a table and then building its b-trees costs about half the CPU of inserting the
same rows into them one by one (docs/performance.md, "publish", round five).

Readers of the old table wait for the swap's lock and then read the new table; statements they
prepared on the old one are planned again. The new table is filled by transactions that
committed before the swap, so a reader whose snapshot is older than those sees it empty: every
reader of the sync schema reads in statements of their own (read committed).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Index:
    name: str
    pk: bool
    ddl: str  # as pg_get_indexdef gives it: CREATE [UNIQUE] INDEX <name> ON <schema.table> …


_INDEXES = """
    SELECT c.relname AS name, i.indisprimary AS pk, pg_get_indexdef(i.indexrelid) AS ddl
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid = $1::regclass ORDER BY c.relname
    """


# A rebuild's swap locks the table while it carries rows over and readers wait, so it is chosen
# only while the table holds at most this many rows, and fewer than the work brings.
REBUILD_MAX_ROWS = 50_000


async def rebuild_pays(conn: asyncpg.Connection, table: str, source: str, entities: list[str]) -> bool:
    """Whether rebuilding ``table`` beats inserting into it: it holds at most REBUILD_MAX_ROWS
    rows and fewer than ``source`` (a table with an ``entity`` column) holds of ``entities`` by
    the planner's statistics (no scan; 0 without statistics)."""
    held = await conn.fetchval(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {REBUILD_MAX_ROWS + 1}) x")
    return bool(held <= REBUILD_MAX_ROWS and held < await _estimated_rows(conn, source, entities))


async def _estimated_rows(conn: asyncpg.Connection, source: str, entities: list[str]) -> int:
    schema, name = source.split(".", 1)
    n = await conn.fetchval(
        """SELECT coalesce(sum(v.freq * greatest(c.reltuples, 0)), 0)::bigint
           FROM pg_stats s, pg_class c,
                unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS v(entity, freq)
           WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = 'entity'
             AND c.oid = $3::regclass AND v.entity = ANY($4::text[])""",
        schema,
        name,
        source,
        entities,
    )
    return int(n)


def next_of(table: str) -> str:
    return f"{table}_next"


async def indexes(conn: asyncpg.Connection, table: str) -> dict[str, Index]:
    """``table``'s indexes by name (``table`` schema-qualified)."""
    return {r["name"]: Index(r["name"], r["pk"], r["ddl"]) for r in await conn.fetch(_INDEXES, table)}


def on_next(idx: Index, table: str) -> str:
    """The DDL that builds ``idx`` of ``table`` on its next table, named ``<name>_next`` until the
    swap renames it."""
    pattern = re.compile(rf"^CREATE (UNIQUE )?INDEX (IF NOT EXISTS )?\S+ ON (ONLY )?{re.escape(table)} ")
    ddl, n = pattern.subn(
        lambda m: f"CREATE {m.group(1) or ''}INDEX {m.group(2) or ''}{idx.name}_next ON {next_of(table)} ", idx.ddl
    )
    if n != 1:
        raise ValueError(f"not an index of {table}: {idx.ddl}")
    return ddl


# A build's sort in memory: with the default 64MB, a 500k-row key of bucket_ops sorted on disk.
BUILD_MEM = "256MB"


async def build(conn: asyncpg.Connection, idx: Index, table: str) -> None:
    """Build ``idx`` of ``table`` on its next table, the setting and the build in one simple
    query: one transaction of their own, or part of the caller's."""
    await conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEM}'; {on_next(idx, table)}")


async def create_next(conn: asyncpg.Connection, table: str) -> None:
    """An empty next table: columns, defaults, constraints and storage of ``table``, no index. A
    next table a rebuild that died half way left behind is dropped first."""
    await conn.execute(f"DROP TABLE IF EXISTS {next_of(table)}")
    await conn.execute(f"CREATE TABLE {next_of(table)} (LIKE {table} INCLUDING ALL EXCLUDING INDEXES)")


async def swap(
    conn: asyncpg.Connection,
    table: str,
    before: Collection[str],
    built: dict[str, Index],
    carry: str | None = None,
) -> Any:
    """Put ``table``'s next table in its place, inside the caller's transaction (which holds
    whatever lock keeps ``table``'s writers out). ``before``: the names of ``table``'s indexes
    when the rebuild started; ``built``: the indexes built on the next table, by name. An index
    made or dropped on ``table`` since the rebuild started is made or dropped on the new table
    too. ``carry``, a statement run once ``table`` is locked (it may move rows over), gives the
    value returned."""
    schema = table.split(".", 1)[0]
    await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    now = await indexes(conn, table)
    final = dict(built)
    for name in sorted(set(built) & set(before) - set(now)):
        await conn.execute(f"DROP INDEX {schema}.{name}_next")
        del final[name]
    for name in sorted(set(now) - set(built)):
        await build(conn, now[name], table)
        final[name] = now[name]
    carried = await conn.fetchval(carry) if carry else None
    await conn.execute(f"DROP TABLE {table}")
    await conn.execute(f"ALTER TABLE {next_of(table)} RENAME TO {table.split('.', 1)[1]}")
    for name, idx in sorted(final.items()):
        if idx.pk:
            await conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}_next")
        else:
            await conn.execute(f"ALTER INDEX {schema}.{name}_next RENAME TO {name}")
    return carried
