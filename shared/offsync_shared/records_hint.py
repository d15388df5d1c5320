"""The records hint: a transaction that writes records (the records API, an import, a device
batch) also names them with a PostgreSQL ``NOTIFY offsync_records`` (delivered when, and only
if, it commits). publish-service hears it on its doorbell's connection (the embedded stack) and
brings those records' buckets up to date from ``data.records`` at once, a produce and a held
fetch before their ``RecordChanged`` events arrive. The events still follow and stay the
guarantee: publish-service's work is state-based (docs/buckets.md), so the event of a record the
hint already applied writes no op. A hint too large for a ``NOTIFY`` is not sent."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
import orjson

from offsync_shared.notify_hint import MAX_PAYLOAD, fitting, parse
from offsync_shared.notify_hint import send as notify

__all__ = ["CHANNEL", "MAX_PAYLOAD", "Key", "decode", "encode", "notice", "send"]

CHANNEL = "offsync_records"

Key = tuple[str, str]  # (entity, record id)


def encode(keys: Iterable[Key]) -> str | None:
    """The payload naming ``keys``, or None when there is none or it is too large."""
    raw = orjson.dumps([[e, i] for e, i in dict.fromkeys(keys)])
    return fitting(raw) if raw != b"[]" else None


def decode(payload: str) -> list[Key] | None:
    """The keys of a payload; None for anything that is not one (never raises)."""
    value = parse(payload)
    if not isinstance(value, list):
        return None
    keys: list[Key] = []
    for k in value:
        if not (isinstance(k, list) and len(k) == 2 and isinstance(k[0], str) and isinstance(k[1], str)):
            return None
        keys.append((k[0], k[1]))
    return keys


def notice(keys: Iterable[Key]) -> tuple[str, str | None]:
    """The hint as a (channel, payload) pair for a statement that queues it with other work
    (offsync_shared.outbox.insert_rows); payload None when there is nothing to send."""
    return CHANNEL, encode(keys)


async def send(conn: asyncpg.Connection, keys: Iterable[Key]) -> None:
    """Queue the hint in ``conn``'s transaction (PostgreSQL sends it at the commit)."""
    await notify(conn, CHANNEL, encode(keys))
