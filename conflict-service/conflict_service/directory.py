"""Reads (never writes) profile-service's ``admin`` schema: the org conflict setting, entity
metadata and the users, teams, roles and business units the permission check needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from conflict_service.validation import ADMIN_TARGETS, EntityMeta, LookupRef
from offsync_shared.domain.org import Actor, bu_subtree, combine_privileges


@dataclass(frozen=True, slots=True)
class OrgSettings:
    conflict_detection: bool


async def org_settings(conn: asyncpg.Connection) -> OrgSettings:
    flag = await conn.fetchval(
        "SELECT conflict_detection FROM admin.org_settings ORDER BY org_id = 'default' DESC LIMIT 1"
    )
    return OrgSettings(bool(flag))


async def settings_and_entities(
    conn: asyncpg.Connection, names: Iterable[str]
) -> tuple[OrgSettings, dict[str, EntityMeta]]:
    """org_settings and entities in one round trip (the write path reads both in its transaction),
    with the entities their lookups point at (a lookup's target must be readable)."""
    rows = await conn.fetch(
        """SELECT (SELECT conflict_detection FROM admin.org_settings ORDER BY org_id = 'default' DESC LIMIT 1) AS flag,
                  e.logical_name, e.ownership, e.attributes, e.conflict_policy
             FROM (SELECT 1) one LEFT JOIN admin.entities e ON e.logical_name = ANY($1::text[])
                  OR e.logical_name IN (SELECT a.value ->> 'target' FROM admin.entities x, jsonb_each(x.attributes) a
                                         WHERE x.logical_name = ANY($1::text[]) AND a.value ->> 'type' = 'lookup')""",
        list(set(names)),
    )
    metas = {
        r["logical_name"]: EntityMeta(r["logical_name"], r["ownership"], r["attributes"] or {}, r["conflict_policy"])
        for r in rows
        if r["logical_name"] is not None
    }
    return OrgSettings(bool(rows[0]["flag"])), metas


async def entities(conn: asyncpg.Connection, names: Iterable[str]) -> dict[str, EntityMeta]:
    rows = await conn.fetch(
        "SELECT logical_name, ownership, attributes, conflict_policy FROM admin.entities WHERE logical_name = ANY($1::text[])",
        list(set(names)),
    )
    return {
        r["logical_name"]: EntityMeta(r["logical_name"], r["ownership"], r["attributes"] or {}, r["conflict_policy"])
        for r in rows
    }


async def actors(conn: asyncpg.Connection, user_ids: Iterable[str]) -> dict[str, Actor]:
    """The actors for ``user_ids`` in a handful of queries, whatever their number."""
    ids = list(set(user_ids))
    if not ids:
        return {}
    users = await conn.fetch("SELECT id, business_unit_id, enabled FROM admin.users WHERE id = ANY($1::text[])", ids)
    teams = await conn.fetch("SELECT user_id, team_id FROM admin.team_members WHERE user_id = ANY($1::text[])", ids)
    roles = await conn.fetch(
        """
        SELECT ur.user_id, r.privileges, r.is_admin FROM admin.user_roles ur JOIN admin.roles r ON r.id = ur.role_id
         WHERE ur.user_id = ANY($1::text[])
        UNION ALL
        SELECT tm.user_id, r.privileges, r.is_admin FROM admin.team_members tm
          JOIN admin.team_roles tr ON tr.team_id = tm.team_id JOIN admin.roles r ON r.id = tr.role_id
         WHERE tm.user_id = ANY($1::text[])
        """,
        ids,
    )
    parents = {r["id"]: r["parent_id"] for r in await conn.fetch("SELECT id, parent_id FROM admin.business_units")}
    team_map: dict[str, set[str]] = {}
    for r in teams:
        team_map.setdefault(r["user_id"], set()).add(r["team_id"])
    role_map: dict[str, list[dict]] = {}
    admin: set[str] = set()
    for r in roles:
        role_map.setdefault(r["user_id"], []).append(r["privileges"] or {})
        if r["is_admin"]:
            admin.add(r["user_id"])
    out: dict[str, Actor] = {}
    for u in users:
        uid = u["id"]
        out[uid] = Actor(
            user_id=uid,
            business_unit_id=u["business_unit_id"],
            team_ids=frozenset(team_map.get(uid, ())),
            bu_subtree=bu_subtree(parents, u["business_unit_id"]),
            privileges=combine_privileges(role_map.get(uid, [])),
            enabled=bool(u["enabled"]),
            is_admin=uid in admin,
        )
    return out


async def existing_admin_refs(conn: asyncpg.Connection, refs: Iterable[LookupRef]) -> set[tuple[str, str]]:
    """Which of the lookups that point at users, teams or business units exist."""
    found: set[tuple[str, str]] = set()
    by_target: dict[str, set[str]] = {}
    for ref in refs:
        if ref.target in ADMIN_TARGETS:
            by_target.setdefault(ref.target, set()).add(ref.id)
    for target, ids in by_target.items():
        rows = await conn.fetch(f"SELECT id FROM admin.{ADMIN_TARGETS[target]} WHERE id = ANY($1::text[])", list(ids))
        found.update((target, r["id"]) for r in rows)
    return found


async def owner_units(conn: asyncpg.Connection, owners: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(owner_type, owner_id) → business unit, for the named users and teams that exist."""
    pairs = set(owners)
    users = [i for t, i in pairs if t == "user"]
    teams = [i for t, i in pairs if t == "team"]
    out: dict[tuple[str, str], str] = {}
    if users:
        for r in await conn.fetch("SELECT id, business_unit_id FROM admin.users WHERE id = ANY($1::text[])", users):
            out[("user", r["id"])] = r["business_unit_id"]
    if teams:
        for r in await conn.fetch("SELECT id, business_unit_id FROM admin.teams WHERE id = ANY($1::text[])", teams):
            out[("team", r["id"])] = r["business_unit_id"]
    return out


async def existing_business_units(conn: asyncpg.Connection, ids: Iterable[str]) -> set[str]:
    wanted = list(set(ids))
    if not wanted:
        return set()
    return {r["id"] for r in await conn.fetch("SELECT id FROM admin.business_units WHERE id = ANY($1::text[])", wanted)}


async def user_generation(conn: asyncpg.Connection, user_id: str) -> str | None:
    """The identity generation of the user now holding ``user_id`` (docs/identity.md)."""
    generation: str | None = await conn.fetchval("SELECT generation FROM admin.users WHERE id = $1", user_id)
    return generation
