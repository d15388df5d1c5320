"""New buckets filled into a rebuilt bucket_ops (publish_service.table_swap): while the table is
still small beside what a publish's fill brings (an org's first publish), its rows and the new
buckets' ops go into a next table with no index, and its b-trees are built once, sorted, instead
of taking the ops one by one (docs/performance.md, "publish", round six).

A rebuild runs under the reconcile's ops lock from its start to the swap, so no op writer changes
bucket_ops meanwhile: its rows, copied first, stay the old table's whole content. The next table
is filled on helper connections (bucket_writes._Helpers) in transactions that commit before the
swap; a reconcile that fails leaves it behind, and the next rebuild drops it first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import asyncpg

from publish_service import table_swap

TABLE = "sync.bucket_ops"
NEXT = table_swap.next_of(TABLE)


async def pays(conn: asyncpg.Connection, entities: Iterable[str]) -> bool:
    """The new buckets' entities hold more index rows (by statistics) than bucket_ops holds ops."""
    return await table_swap.rebuild_pays(conn, TABLE, "sync.record_index", sorted(set(entities)))


class OpsRebuild:
    def __init__(self, pool: asyncpg.Pool, parts: int, before: dict[str, table_swap.Index]) -> None:
        self.pool = pool
        self.parts = max(1, parts)
        self.before = before
        self.built: dict[str, table_swap.Index] = {}

    @classmethod
    async def start(cls, pool: asyncpg.Pool, parts: int, leftovers: list[str]) -> OpsRebuild:
        """The next table, holding bucket_ops' rows but those of ``leftovers`` (buckets being
        materialized: ops a failed earlier materialization left behind)."""
        async with pool.acquire() as c:
            before = await table_swap.indexes(c, TABLE)
            await table_swap.create_next(c, TABLE)
            await c.execute(
                f"INSERT INTO {NEXT} SELECT * FROM {TABLE} WHERE NOT (bucket_id = ANY($1::text[]))", leftovers
            )
        return cls(pool, parts, before)

    async def build(self, idxs: Iterable[table_swap.Index]) -> None:
        """Build the indexes not built yet on the next table, ``parts`` at a time."""
        todo = [i for i in idxs if i.name not in self.built]
        gate = asyncio.Semaphore(self.parts)

        async def one(idx: table_swap.Index) -> None:
            async with gate, self.pool.acquire() as c:
                await table_swap.build(c, idx, TABLE)

        await asyncio.gather(*(one(i) for i in todo))
        self.built.update((i.name, i) for i in todo)

    async def build_ddl(self, ddl: dict[str, str]) -> None:
        """Indexes given as ``CREATE INDEX … ON sync.bucket_ops`` statements by name (those
        bucket_ops already has are built as it has them)."""
        await self.build(self.before.get(name) or table_swap.Index(name, False, d) for name, d in ddl.items())

    async def swap(self, conn: asyncpg.Connection) -> None:
        """Put the next table in bucket_ops' place, in ``conn``'s transaction (which holds the ops
        lock), once every index of bucket_ops is built on it (:meth:`build`)."""
        await table_swap.swap(conn, TABLE, self.before, self.built)

    async def abandon(self) -> None:
        """Drop the next table after a failure before the swap (best effort: the next rebuild
        drops it anyway). Not after: the swap's transaction holds the table."""
        with contextlib.suppress(Exception):
            async with self.pool.acquire() as c:
                await c.execute(f"DROP TABLE IF EXISTS {NEXT}")
