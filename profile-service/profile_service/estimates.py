"""Estimates how many records and bytes each user of a profile would carry, from the records
table of conflict-service (`data.records`, read-only) when it exists.

Exact for "all" and the user's / team's / business unit's filters (unions included); an upper
bound (every live record of the entity) for custom filters and items with relationships. Bytes
are the JSON size of the attributes plus a fixed per-record overhead. Role trimming is ignored,
so the estimate never under-counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

RECORD_OVERHEAD_BYTES = 100


@dataclass(frozen=True)
class UserContext:
    user_id: str
    business_unit_id: str
    team_ids: frozenset[str]


async def records_table_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('data.records') IS NOT NULL"))


async def estimate(
    conn: asyncpg.Connection, items: Sequence[Mapping[str, Any]], users: Sequence[UserContext]
) -> list[dict[str, Any]]:
    """Per user: {user_id, records, bytes, exact, items: [{entity, records, bytes, exact}]}."""
    groups: dict[str, list[asyncpg.Record]] = {}
    for item in items:
        groups[item["entity"]] = await conn.fetch(
            f"""SELECT owner_type, owner_id, business_unit_id, count(*) AS n,
                       COALESCE(sum(octet_length(attributes::text)), 0) + count(*) * {RECORD_OVERHEAD_BYTES} AS bytes
                FROM data.records WHERE entity = $1 AND NOT deleted
                GROUP BY owner_type, owner_id, business_unit_id""",
            item["entity"],
        )
    out = []
    for u in users:
        per_item = []
        for item in items:
            n, b, exact = _item_estimate(item, groups[item["entity"]], u)
            per_item.append({"entity": item["entity"], "records": n, "bytes": b, "exact": exact})
        out.append(
            {
                "user_id": u.user_id,
                "records": sum(i["records"] for i in per_item),
                "bytes": sum(i["bytes"] for i in per_item),
                "exact": all(i["exact"] for i in per_item),
                "items": per_item,
            }
        )
    return out


def _item_estimate(item: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], u: UserContext) -> tuple[int, int, bool]:
    f = item.get("filter") or {}
    kind = f.get("kind")
    rels = item.get("relationships") or []
    total = (sum(int(g["n"]) for g in groups), sum(int(g["bytes"]) for g in groups))
    if rels or kind == "custom":
        return total[0], total[1], False
    if kind == "all":
        return total[0], total[1], True
    if kind == "related":
        return 0, 0, True
    n = b = 0
    for g in groups:
        if (
            (f.get("user") and g["owner_type"] == "user" and g["owner_id"] == u.user_id)
            or (f.get("team") and g["owner_type"] == "team" and g["owner_id"] in u.team_ids)
            or (f.get("business_unit") and g["business_unit_id"] == u.business_unit_id)
        ):
            n += int(g["n"])
            b += int(g["bytes"])
    return n, b, True
