"""Stores and reads the sync error ledger (``data.sync_errors``): each change that did not make
it as sent, and what an admin later did about it (re-applied, failed again, dismissed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import asyncpg
import orjson

from conflict_service.batch_decisions import SyncErrorEntry
from conflict_service.data_outbox import SCHEMA
from offsync_shared import outbox
from offsync_shared.paging import Window, fetch_page


def append(entries: Sequence[SyncErrorEntry]) -> outbox.Also | None:
    """All entries in one statement, ids in the order given (one execution per row cost
    PostgreSQL a plan-and-execute each: a server-wins poll of an upload storm ledgers hundreds),
    for the outbox's to run (outbox.insert_rows); None when there are none."""
    if not entries:
        return None
    rows = [_row(e) for e in entries]
    return outbox.statement(
        f"""INSERT INTO {SCHEMA}.sync_errors(user_id, device_id, batch_id, seq, entity, record_id, op, code,
               message, field, change)
            SELECT u, d, b, s, e, r, o, c, m, f, ch::jsonb
              FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[],
                          $8::text[], $9::text[], $10::text[], $11::text[]) WITH ORDINALITY
                   AS t(u, d, b, s, e, r, o, c, m, f, ch, n)
             ORDER BY n""",
        [[row[i] for row in rows] for i in range(11)],
    )


def _row(e: SyncErrorEntry) -> tuple[object, ...]:
    it, ch = e.item, e.item.change
    return (
        it.user_id,
        it.device_id,
        it.batch_id,
        ch.seq,
        ch.entity,
        ch.id,
        ch.op,
        e.code,
        e.message,
        e.field,
        orjson.dumps(ch.model_dump(mode="json")).decode(),
    )


async def page(conn: asyncpg.Connection, equal: Mapping[str, object | None], window: Window) -> list[asyncpg.Record]:
    """The entries in ``window`` whose columns equal ``equal``'s, by id."""
    return await fetch_page(conn, f"{SCHEMA}.sync_errors", equal, window)


async def lock_one(conn: asyncpg.Connection, error_id: int) -> asyncpg.Record | None:
    """One entry, locked until the transaction ends (a re-apply settles it exactly once)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.sync_errors WHERE id = $1 FOR UPDATE", error_id
    )
    return row


async def resolve(
    conn: asyncpg.Connection,
    error_id: int,
    status: Literal["reapplied", "failed_again"],
    resolution: Mapping[str, Any],
) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.sync_errors SET status = $2, resolved_at = now(), resolution = $3::text::jsonb WHERE id = $1",
        error_id,
        status,
        orjson.dumps(resolution).decode(),
    )


async def dismiss(conn: asyncpg.Connection, error_id: int) -> Literal["dismissed", "reapplied", "missing"]:
    """Mark an entry dismissed, unless it was re-applied; what the entry is now."""
    status = await conn.fetchval(
        f"""UPDATE {SCHEMA}.sync_errors SET status = 'dismissed', resolved_at = now()
            WHERE id = $1 AND status <> 'reapplied' RETURNING status""",
        error_id,
    )
    if status is not None:
        return "dismissed"
    if await conn.fetchval(f"SELECT 1 FROM {SCHEMA}.sync_errors WHERE id = $1", error_id):
        return "reapplied"
    return "missing"
