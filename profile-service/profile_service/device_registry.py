"""Reads the device registry that sync-service keeps in ``gateway.devices`` (read-only here):
each device with its user's name and whether its gateway still vouches for it being online."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

ONLINE_WITHIN = timedelta(seconds=30)  # three missed gateway heartbeats: its process is gone

DEVICES_SQL = """
SELECT d.*, u.name AS user_name FROM gateway.devices d LEFT JOIN admin.users u ON u.id = d.user_id
WHERE ($1::text IS NULL OR d.user_id = $1) ORDER BY d.online DESC, greatest(d.seen_at, d.synced_at) DESC NULLS LAST
LIMIT 500
"""


async def read_devices(conn: asyncpg.Connection, user_id: str | None = None) -> list[dict[str, Any]]:
    try:
        rows = await conn.fetch(DEVICES_SQL, user_id)
    except asyncpg.UndefinedTableError:  # no gateway has started against this database yet
        return []
    now = datetime.now(UTC)
    out = []
    for r in rows:
        d = dict(r)
        d["online_now"] = bool(d["online"] and d["seen_at"] and now - d["seen_at"] < ONLINE_WITHIN)
        out.append(d)
    return out
