"""Stores and reads device batches' answers (``data.batches``), so a batch delivered again is
answered as it was the first time, and serializes a device's batches across workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from conflict_service.data_outbox import SCHEMA
from offsync_shared import outbox
from offsync_shared.events.batch_results import BatchApplied, ChangeResult


async def lock_devices(conn: asyncpg.Connection, device_ids: Sequence[str]) -> None:
    """Hold each device's transaction lock (in one order, so workers never deadlock)."""
    await conn.execute(
        "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT hashtext('device:' || d) AS h FROM unnest($1::text[]) d ORDER BY 1) s",
        sorted(set(device_ids)),
    )


async def stored(conn: asyncpg.Connection, batch_ids: Sequence[str]) -> dict[str, BatchApplied]:
    """The answers already given to any of ``batch_ids``."""
    rows = await conn.fetch(
        f"SELECT batch_id, device_id, user_id, results FROM {SCHEMA}.batches WHERE batch_id = ANY($1::text[])",
        list(batch_ids),
    )
    return {
        r["batch_id"]: BatchApplied(
            batch_id=r["batch_id"],
            device_id=r["device_id"],
            user_id=r["user_id"],
            results=[ChangeResult.model_validate(x) for x in r["results"]],
        )
        for r in rows
    }


def _results(a: BatchApplied) -> str:
    return orjson.dumps([r.model_dump(mode="json") for r in a.results]).decode()


def store(answers: Sequence[BatchApplied], results: Sequence[list[Any]] | None = None) -> outbox.Also | None:
    """New answers in one statement (their batch ids are new: checked under the device lock), for
    the outbox's to run (outbox.insert_rows); ``results``: each answer's results already dumped
    (its envelope's), saving a second dump. None when there are none."""
    if not answers:
        return None
    dumped = [orjson.dumps(r).decode() for r in results] if results is not None else [_results(a) for a in answers]
    return outbox.statement(
        f"""INSERT INTO {SCHEMA}.batches(batch_id, device_id, user_id, results)
            SELECT b, d, u, r::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(b, d, u, r)""",
        [[a.batch_id for a in answers], [a.device_id for a in answers], [a.user_id for a in answers], dumped],
    )


async def store_unless_known(conn: asyncpg.Connection, answer: BatchApplied) -> None:
    """Store one answer unless its batch already has one (a refusal racing a late apply)."""
    await conn.execute(
        f"""INSERT INTO {SCHEMA}.batches(batch_id, device_id, user_id, results) VALUES ($1, $2, $3, $4::text::jsonb)
            ON CONFLICT (batch_id) DO NOTHING""",
        answer.batch_id,
        answer.device_id,
        answer.user_id,
        _results(answer),
    )
