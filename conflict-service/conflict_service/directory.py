"""Reads (never writes) profile-service's ``admin`` schema: the org conflict setting, entity
metadata and the users, teams, roles and business units the permission check needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from conflict_service.validation import ADMIN_TARGETS, EntityMeta, LookupRef
from offsync_shared.domain.org import Actor, combine_privileges


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


# Each user with everything the access rule needs, in one statement: teams, the business-unit
# subtree (walked here, not by reading every unit), the roles' privilege maps (the user's and
# their teams'), whether any is an administrator's, and the identity generation.
_ACTORS = """
WITH RECURSIVE u AS (
    SELECT id, business_unit_id, enabled, generation FROM admin.users WHERE id = ANY($1::text[])
), sub(user_id, bu) AS (
    SELECT id, business_unit_id FROM u
    UNION
    SELECT sub.user_id, b.id FROM admin.business_units b JOIN sub ON b.parent_id = sub.bu
), roles AS (
    SELECT ur.user_id, r.privileges, r.is_admin FROM admin.user_roles ur JOIN admin.roles r ON r.id = ur.role_id
     WHERE ur.user_id IN (SELECT id FROM u)
    UNION ALL
    SELECT tm.user_id, r.privileges, r.is_admin FROM admin.team_members tm
      JOIN admin.team_roles tr ON tr.team_id = tm.team_id JOIN admin.roles r ON r.id = tr.role_id
     WHERE tm.user_id IN (SELECT id FROM u)
)
SELECT u.id, u.business_unit_id, u.enabled, u.generation,
       ARRAY(SELECT tm.team_id FROM admin.team_members tm WHERE tm.user_id = u.id) AS teams,
       ARRAY(SELECT sub.bu FROM sub WHERE sub.user_id = u.id) AS subtree,
       (SELECT coalesce(jsonb_agg(coalesce(r.privileges, '{}')), '[]') FROM roles r WHERE r.user_id = u.id) AS privileges,
       EXISTS(SELECT 1 FROM roles r WHERE r.user_id = u.id AND r.is_admin) AS is_admin
  FROM u
"""


async def actors(conn: asyncpg.Connection, user_ids: Iterable[str]) -> dict[str, Actor]:
    """The actors for ``user_ids`` in one query, whatever their number."""
    return {uid: actor for uid, (actor, _) in (await _actors(conn, user_ids)).items()}


async def actor(conn: asyncpg.Connection, user_id: str, generation: str | None) -> Actor | None:
    """The actor for ``user_id``, if the user exists and, when ``generation`` is given, is still
    that incarnation of the id (a user deleted and re-created with the same id is another
    person: docs/identity.md)."""
    found = (await _actors(conn, [user_id])).get(user_id)
    if found is None or (generation is not None and found[1] != generation):
        return None
    return found[0]


async def _actors(conn: asyncpg.Connection, user_ids: Iterable[str]) -> dict[str, tuple[Actor, str]]:
    ids = list(set(user_ids))
    if not ids:
        return {}
    return {
        u["id"]: (
            Actor(
                user_id=u["id"],
                business_unit_id=u["business_unit_id"],
                team_ids=frozenset(u["teams"]),
                bu_subtree=frozenset(u["subtree"]),
                privileges=combine_privileges(u["privileges"]),
                enabled=bool(u["enabled"]),
                is_admin=u["is_admin"],
            ),
            u["generation"],
        )
        for u in await conn.fetch(_ACTORS, ids)
    }


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
