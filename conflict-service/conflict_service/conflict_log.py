"""Stores and reads the conflicts log (``data.conflicts``): every concurrent server change a
change met, how the policy settled it and what each side had."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import orjson

from conflict_service.batch_decisions import ConflictEntry
from conflict_service.data_outbox import SCHEMA
from offsync_shared.paging import Window, fetch_page


async def append(conn: asyncpg.Connection, entries: Sequence[ConflictEntry]) -> None:
    if not entries:
        return
    await conn.executemany(
        f"""INSERT INTO {SCHEMA}.conflicts(entity, record_id, user_id, device_id, batch_id, seq, op, policy,
               outcome, base_version, server_version, server_record, client_change, result_record, lost_fields)
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12::text::jsonb,$13::text::jsonb,$14::text::jsonb,$15)""",
        [_row(e) for e in entries],
    )


def _row(e: ConflictEntry) -> tuple[object, ...]:
    it, ch, server = e.item, e.item.change, e.server
    return (
        ch.entity,
        ch.id,
        it.user_id,
        it.device_id,
        it.batch_id,
        ch.seq,
        ch.op,
        e.policy.value,
        e.outcome.value,
        ch.base_version,
        server.version,
        orjson.dumps(
            {"version": server.version, "deleted": server.deleted, "attributes": dict(server.attributes)}
        ).decode(),
        orjson.dumps(ch.model_dump(mode="json")).decode(),
        orjson.dumps(e.result.wire() if e.result else {}).decode(),
        list(e.lost_fields),
    )


async def page(conn: asyncpg.Connection, equal: Mapping[str, object | None], window: Window) -> list[asyncpg.Record]:
    """The entries in ``window`` whose columns equal ``equal``'s, by id."""
    return await fetch_page(conn, f"{SCHEMA}.conflicts", equal, window)
