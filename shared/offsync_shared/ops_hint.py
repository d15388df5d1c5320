"""The ops hint: publish-service's transaction that writes ops also says which buckets advanced
with a PostgreSQL ``NOTIFY offsync_ops`` (delivered when, and only if, it commits). A gateway
that listens (on its doorbell's connection: the embedded stack) hears it at the commit, one
broker hop before the ``buckets.advanced`` event on the sync-notify topic; that event still
follows and stays the guarantee (a hint lost, too large to send or sent while nobody listened
costs that hop, never a delivery). Handling both is idempotent: a session already past an op id
ignores it (sync_service.hub). On the embedded broker a consumer hears a record only when its
held fetch's wait runs out (docs/performance.md, the change path), so this is that wait and one
produce off every live change.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
import orjson

CHANNEL = "offsync_ops"
# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more; a larger hint is not sent.
MAX_PAYLOAD = 7_900


def encode(advanced: Mapping[str, int]) -> str | None:
    """The payload for ``advanced`` (bucket id -> newest op id), or None when it is too large."""
    if not advanced:
        return None
    raw = orjson.dumps(dict(advanced))
    return raw.decode() if len(raw) <= MAX_PAYLOAD else None


def decode(payload: str) -> dict[str, int] | None:
    """The buckets of a payload; None for anything that is not one (never raises)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    if not all(isinstance(k, str) and type(v) is int for k, v in value.items()):
        return None
    return value


async def send(conn: asyncpg.Connection, advanced: Mapping[str, int]) -> None:
    """Queue the hint in ``conn``'s transaction (PostgreSQL sends it at the commit)."""
    payload = encode(advanced)
    if payload is not None:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
