"""Stores and reads the conflicts log (``data.conflicts``): every concurrent server change a
change met, how the policy settled it and what each side had."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import orjson

from conflict_service.batch_decisions import ConflictEntry
from conflict_service.data_outbox import SCHEMA
from offsync_shared import outbox
from offsync_shared.paging import Window, fetch_page


def append(entries: Sequence[ConflictEntry]) -> outbox.Also | None:
    """All entries in one statement, ids in the order given (a poll of an upload storm logs
    hundreds: one execution per row cost PostgreSQL a plan-and-execute each), for the outbox's
    to run (outbox.insert_rows); None when there are none."""
    if not entries:
        return None
    rows = [_row(e) for e in entries]
    return outbox.statement(
        f"""INSERT INTO {SCHEMA}.conflicts(entity, record_id, user_id, device_id, batch_id, seq, op, policy,
               outcome, base_version, server_version, server_record, client_change, result_record, lost_fields)
            SELECT e, r, u, d, b, s, o, p, oc, bv, sv, sr::jsonb, cc::jsonb, rr::jsonb,
                   ARRAY(SELECT jsonb_array_elements_text(lf::jsonb))
              FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                          $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::text[], $13::text[],
                          $14::text[], $15::text[]) WITH ORDINALITY
                   AS t(e, r, u, d, b, s, o, p, oc, bv, sv, sr, cc, rr, lf, n)
             ORDER BY n""",
        [[row[i] for row in rows] for i in range(15)],
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
        orjson.dumps(list(e.lost_fields)).decode(),
    )


async def page(conn: asyncpg.Connection, equal: Mapping[str, object | None], window: Window) -> list[asyncpg.Record]:
    """The entries in ``window`` whose columns equal ``equal``'s, by id."""
    return await fetch_page(conn, f"{SCHEMA}.conflicts", equal, window)
