"""The WHERE clause of an admin list that filters on equal columns and a time range and pages
by an increasing id (the audit log, the conflicts log, the sync error ledger)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime


def page_filter(
    equal: Mapping[str, object | None],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int | None = None,
) -> tuple[str, list[object]]:
    """SQL (``$n`` placeholders from 1) and its arguments: each column of ``equal`` whose value
    is not None equals it, ``at`` is in [since, until), ``id`` is above ``after``. The column
    names are the caller's constants, never input."""
    where: list[str] = ["true"]
    args: list[object] = []

    def add(condition: str, value: object) -> None:
        args.append(value)
        where.append(condition.format(f"${len(args)}"))

    for column, value in equal.items():
        if value is not None:
            add(f"{column} = {{}}", value)
    if since is not None:
        add("at >= {}", since)
    if until is not None:
        add("at < {}", until)
    if after is not None:
        add("id > {}", after)
    return " AND ".join(where), args
