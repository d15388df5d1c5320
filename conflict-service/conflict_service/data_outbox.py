"""The ``data`` schema conflict-service owns, and its outbox: events written in the same
transaction as the change they announce (offsync_shared.outbox relays them)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from offsync_shared import outbox, records_hint
from offsync_shared.envelope import Envelope

SCHEMA = "data"
# Records hints only where publish-service hears them: with the doorbell (conflict_service.app).
HINT_RECORDS = False


async def write_outbox(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[str, Envelope]],
    hinted: Sequence[tuple[str, str]] = (),
    also: Sequence[outbox.Also | None] = (),
) -> outbox.Inserted:
    """Add events to the data outbox in one statement, which also names the records ``hinted``
    (those this transaction wrote: offsync_shared.records_hint) if hints are on, and runs the
    transaction's other writes (``also``; None entries skipped). Returns the transaction's now()
    and what the writes returned."""
    notices = [records_hint.notice(hinted)] if HINT_RECORDS and hinted else []
    messages = [(topic, env.key, env.encode()) for topic, env in rows]
    done = await outbox.insert_rows(conn, SCHEMA, messages, notices, [a for a in also if a], always=True)
    assert done is not None
    return done
