"""The query of an admin list that filters on equal columns and a time range and pages by an
increasing id (the audit log, the conflicts log, the sync error ledger)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def page_query(
    table: str,
    equal: Mapping[str, object | None],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
    limit: int,
) -> tuple[str, list[object]]:
    """SQL and its arguments for up to ``limit`` rows of ``table`` by id: each column of
    ``equal`` whose value is not None equals it, ``at`` is in [since, until), ``id`` is above
    ``after``. The table and column names are the caller's constants, never input."""
    where: list[str] = ["true"]
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    for column, value in equal.items():
        if value is not None:
            where.append(f"{column} = {arg(value)}")
    if since is not None:
        where.append(f"at >= {arg(since)}")
    if until is not None:
        where.append(f"at < {arg(until)}")
    if after is not None:
        where.append(f"id > {arg(after)}")
    return f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY id LIMIT {arg(limit)}", args


@dataclass(frozen=True, slots=True)
class Window:
    """Which part of a list: entries at or after ``since``, before ``until``, with an id above
    ``after``, at most ``limit`` of them."""

    limit: int
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None


async def fetch_page(conn: Any, table: str, equal: Mapping[str, object | None], window: Window) -> list[Any]:
    """The rows of ``table`` (an asyncpg connection or pool's) in ``window`` whose columns equal ``equal``'s."""
    sql, args = page_query(table, equal, since=window.since, until=window.until, after=window.after, limit=window.limit)
    rows: list[Any] = await conn.fetch(sql, *args)
    return rows
