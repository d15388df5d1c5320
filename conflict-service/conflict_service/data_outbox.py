"""The ``data`` schema conflict-service owns, and its outbox: events written in the same
transaction as the change they announce (offsync_shared.outbox relays them)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from offsync_shared import outbox
from offsync_shared.envelope import Envelope

SCHEMA = "data"


async def write_outbox(conn: asyncpg.Connection, rows: Sequence[tuple[str, Envelope]]) -> None:
    """Add events to the data outbox in one statement."""
    await outbox.insert_rows(conn, SCHEMA, [(topic, env.key, env.encode()) for topic, env in rows])
