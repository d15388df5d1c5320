"""The records API's writes: one change or a batch of changes through the applier in one
transaction, a rejected change raised as its 4xx (the whole batch then rolls back), and the
re-apply of a ledgered change as its user."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from conflict_service import record_store, sync_error_ledger
from conflict_service.applier import Applier
from conflict_service.batch_decisions import ChangeItem, ItemResult
from conflict_service.context import Ctx
from conflict_service.data_outbox import write_outbox
from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from offsync_shared.events.batch_results import BatchApplied, ChangeResult
from offsync_shared.events.device_batches import Change


@contextlib.asynccontextmanager
async def _write_errors() -> AsyncIterator[None]:
    """The database's refusals that are the request's fault or a race it lost, as their 4xx."""
    try:
        yield
    except (asyncpg.UntranslatableCharacterError, asyncpg.CharacterNotInRepertoireError):
        # PostgreSQL text cannot hold NUL: bad input, not a server error.
        raise ValidationFailed("text must not contain NUL characters", field="attributes") from None
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "records_pkey":
            raise
        # Another request created a record with the same id while this one was creating it
        # (record_store.write): nothing was written; the other's record stands.
        raise Conflict("a record with this id was created at the same time; read it before writing") from None


def _raise_if_rejected(res: ItemResult, index: int | None = None) -> None:
    if res.rejection is not None:
        raise res.rejection.exception(index, res.result.id)


async def write_one(ctx: Ctx, item: ChangeItem) -> Mapping[str, Any]:
    """Apply one change as the caller; the record as stored afterwards."""
    async with _write_errors(), ctx.write() as conn:
        stored: dict[tuple[str, str], Mapping[str, Any]] = {}
        [res] = (
            await Applier(ctx.topics).apply_items(
                conn, [item], known_actors={ctx.actor.user_id: ctx.actor}, stored=stored
            )
        ).results
        _raise_if_rejected(res)
        key = (item.change.entity, item.change.id)
        row = stored.get(key) or await record_store.get(conn, *key)  # nothing written (no change): read it
    assert row is not None
    return row


@dataclass(frozen=True)
class BatchWritten:
    modified_at: datetime  # the transaction's time: the modified_at of every row it wrote
    results: list[ItemResult]


async def write_batch(ctx: Ctx, items: Sequence[ChangeItem]) -> BatchWritten:
    """Every change in one transaction, in order, or none: the first rejected change aborts
    the batch with its 4xx. One commit time (``modified_at``) for all of them."""
    async with _write_errors(), ctx.write() as conn:
        done = await Applier(ctx.topics).apply_items(conn, items, known_actors={ctx.actor.user_id: ctx.actor})
        for i, res in enumerate(done.results):
            _raise_if_rejected(res, i)
        modified_at: datetime = done.at or await conn.fetchval("SELECT now()")
    return BatchWritten(modified_at, done.results)


@dataclass(frozen=True)
class Reapplied:
    status: Literal["reapplied", "failed_again"]
    result: ChangeResult


async def reapply(ctx: Ctx, error_id: int, force: bool) -> Reapplied:
    """Re-apply a ledgered change as its user, now; its device gets the outcome on batch-results."""
    async with ctx.write() as conn:
        err = await sync_error_ledger.lock_one(conn, error_id)
        if err is None:
            raise NotFound(f"no sync error {error_id}")
        if err["status"] == "reapplied":
            raise Conflict("this change was already re-applied")
        change = Change.model_validate(err["change"])
        if force:
            change = change.model_copy(update={"base_version": None})
        batch_id = f"{err['batch_id'] or 'api'}:reapply:{error_id}"
        [res] = (
            await Applier(ctx.topics).apply_items(
                conn, [ChangeItem(err["user_id"], change, err["device_id"], batch_id)]
            )
        ).results
        status: Literal["reapplied", "failed_again"] = "reapplied" if res.applied_as_sent else "failed_again"
        await sync_error_ledger.resolve(conn, error_id, status, res.result.model_dump(mode="json"))
        if err["device_id"]:
            answer = BatchApplied(
                batch_id=batch_id, device_id=err["device_id"], user_id=err["user_id"], results=[res.result]
            )
            await write_outbox(conn, [(ctx.topics.batch_results, answer.envelope(err["device_id"]))])
    return Reapplied(status=status, result=res.result)
