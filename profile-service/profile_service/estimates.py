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


@dataclass
class _Groups:
    """One entity's live records grouped by (owner, business unit), indexed so that a user's
    share is found from its own, its teams' and its BU's groups instead of a scan per user."""

    sizes: list[tuple[int, int]]  # (records, bytes) per group
    by_user: dict[str, list[int]]
    by_team: dict[str, list[int]]
    by_bu: dict[str, list[int]]
    total: tuple[int, int]

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]]) -> _Groups:
        g = cls([], {}, {}, {}, (0, 0))
        n_all = b_all = 0
        for i, r in enumerate(rows):
            n, b = int(r["n"]), int(r["bytes"])
            g.sizes.append((n, b))
            n_all, b_all = n_all + n, b_all + b
            if r["owner_type"] == "user" and r["owner_id"] is not None:
                g.by_user.setdefault(r["owner_id"], []).append(i)
            elif r["owner_type"] == "team" and r["owner_id"] is not None:
                g.by_team.setdefault(r["owner_id"], []).append(i)
            if r["business_unit_id"] is not None:
                g.by_bu.setdefault(r["business_unit_id"], []).append(i)
        g.total = (n_all, b_all)
        return g


async def estimate(
    conn: asyncpg.Connection, items: Sequence[Mapping[str, Any]], users: Sequence[UserContext]
) -> list[dict[str, Any]]:
    """Per user: {user_id, records, bytes, exact, items: [{entity, records, bytes, exact}]}."""
    groups: dict[str, _Groups] = {}
    for item in items:
        groups[item["entity"]] = _Groups.of(
            await conn.fetch(
                f"""SELECT owner_type, owner_id, business_unit_id, count(*) AS n,
                           COALESCE(sum(octet_length(attributes::text)), 0) + count(*) * {RECORD_OVERHEAD_BYTES} AS bytes
                    FROM data.records WHERE entity = $1 AND NOT deleted
                    GROUP BY owner_type, owner_id, business_unit_id""",
                item["entity"],
            )
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


def is_exact(item: Mapping[str, Any]) -> bool:
    """Whether an item's estimate is an exact count (else every live record of its entity)."""
    return not item.get("relationships") and (item.get("filter") or {}).get("kind") != "custom"


def _item_estimate(item: Mapping[str, Any], groups: _Groups, u: UserContext) -> tuple[int, int, bool]:
    f = item.get("filter") or {}
    kind = f.get("kind")
    if not is_exact(item):
        return groups.total[0], groups.total[1], False
    if kind == "all":
        return groups.total[0], groups.total[1], True
    if kind == "related":
        return 0, 0, True
    chosen: set[int] = set()  # a set: a group matching several filters counts once (a union)
    if f.get("user"):
        chosen.update(groups.by_user.get(u.user_id, ()))
    if f.get("team"):
        for t in u.team_ids:
            chosen.update(groups.by_team.get(t, ()))
    if f.get("business_unit"):
        chosen.update(groups.by_bu.get(u.business_unit_id, ()))
    return sum(groups.sizes[i][0] for i in chosen), sum(groups.sizes[i][1] for i in chosen), True
