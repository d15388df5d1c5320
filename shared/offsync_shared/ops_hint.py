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

from offsync_shared.notify_hint import MAX_PAYLOAD, fitting, parse
from offsync_shared.notify_hint import send as notify

__all__ = ["CHANNEL", "MAX_PAYLOAD", "decode", "encode", "notice", "send"]

CHANNEL = "offsync_ops"


def encode(advanced: Mapping[str, int]) -> str | None:
    """The payload for ``advanced`` (bucket id -> newest op id), or None when it is too large."""
    if not advanced:
        return None
    return fitting(orjson.dumps(dict(advanced)))


def decode(payload: str) -> dict[str, int] | None:
    """The buckets of a payload; None for anything that is not one (never raises)."""
    value = parse(payload)
    if not isinstance(value, dict):
        return None
    if not all(isinstance(k, str) and type(v) is int for k, v in value.items()):
        return None
    return value


def notice(advanced: Mapping[str, int]) -> tuple[str, str | None]:
    """The hint as a (channel, payload) pair for a statement that queues it with other work
    (offsync_shared.outbox.insert_rows); payload None when there is nothing to send."""
    return CHANNEL, encode(advanced)


async def send(conn: asyncpg.Connection, advanced: Mapping[str, int]) -> None:
    """Queue the hint in ``conn``'s transaction (PostgreSQL sends it at the commit)."""
    await notify(conn, CHANNEL, encode(advanced))
