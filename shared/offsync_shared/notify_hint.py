"""What the hints (offsync_shared.ops_hint, offsync_shared.records_hint) share: PostgreSQL's
limit on a NOTIFY payload, a parse that never raises, and the send in the caller's transaction."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; a larger hint is not sent.
MAX_PAYLOAD = 7_900


def fitting(raw: bytes) -> str | None:
    """``raw`` as a payload, or None when it is too large to send."""
    return raw.decode() if len(raw) <= MAX_PAYLOAD else None


def parse(payload: str) -> Any:
    """The JSON value of a payload; None when it is not JSON (never raises)."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


async def send(conn: asyncpg.Connection, channel: str, payload: str | None) -> None:
    """Queue ``payload`` on ``channel`` in ``conn``'s transaction (PostgreSQL sends it at the
    commit); None sends nothing."""
    if payload is not None:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
