"""Knows what an admin change looks like in the audit log: builds the entry for a request (who,
what, from where; the body with secrets redacted) and writes and reads ``admin.audit_log``.

Entries are written by ``Ctx.tx`` in the transaction of the change itself, so a change without
its entry (or an entry for a change rolled back) cannot exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from offsync_shared.paging import Window, fetch_page

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_DETAIL_BYTES = 16 * 1024  # a larger body is recorded by its keys only
REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|credential|private", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Entry:
    actor_id: str
    client_address: str | None
    method: str
    path: str
    route: str
    target_kind: str
    target_id: str | None
    details: dict[str, Any]


def redact(value: Any) -> Any:
    """``value`` with every field whose name says it holds a secret replaced by REDACTED."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def details_of(body: bytes, path_params: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(path_params) > 1:
        out["path_params"] = path_params
    if not body:
        return out
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {**out, "body_bytes": len(body)}
    if len(body) > MAX_DETAIL_BYTES:
        keys = sorted(parsed) if isinstance(parsed, dict) else []
        return {**out, "body_bytes": len(body), "body_keys": keys}
    return {**out, "body": redact(parsed)}


def entry_for(
    actor_id: str,
    client_address: str | None,
    method: str,
    path: str,
    route: str,
    path_params: dict[str, str],
    body: bytes,
) -> Entry:
    """The entry of one admin request; the target is the route's collection and first id."""
    segments = [s for s in route.split("/") if s and s != "v1"]
    kind = segments[0] if segments else route
    first = next(iter(path_params.values()), None)
    return Entry(actor_id, client_address, method, path, route, kind, first, details_of(body, path_params))


async def write(conn: asyncpg.Connection, e: Entry) -> None:
    await conn.execute(
        """INSERT INTO admin.audit_log(actor_id, client_address, method, path, route, target_kind, target_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb)""",
        e.actor_id,
        e.client_address,
        e.method,
        e.path,
        e.route,
        e.target_kind,
        e.target_id,
        orjson.dumps(e.details).decode(),
    )


async def read(
    conn: asyncpg.Connection,
    *,
    actor_id: str | None,
    target_kind: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    equal = {"actor_id": actor_id, "target_kind": target_kind, "target_id": target_id}
    return await fetch_page(conn, "admin.audit_log", equal, Window(limit, since, until, after))
