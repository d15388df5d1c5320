"""Keeps every user's bucket set equal to what their published profile and the current org
select: applies profile publishes/deletes, plans each member, materializes new buckets, diffs
user_buckets/user_profiles and drops buckets nobody uses.

Org state comes from the admin schema (read-only, current state), so any org event — user,
team, BU, role or entity changed — is handled by one idempotent reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from offsync_shared.events.admin import ProfileDeleted, ProfilePublished
from publish_service import bucket_writes, first_copy
from publish_service.rules.buckets import BucketDef, ProfileItem, item_link_indexes, plan_user
from publish_service.rules.model import OrgModel, Role, Team, User

log = logging.getLogger(__name__)
DELETED_VERSION = 2**31 - 1  # a deleted profile's tombstone: no older publish can revive it


@dataclass
class ReconcileResult:
    new_buckets: int = 0
    dropped_buckets: int = 0
    ops_written: int = 0
    changed_users: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


async def load_org(conn: asyncpg.Connection) -> OrgModel:
    """The current org model from the admin schema (read-only)."""
    bus = {r["id"]: r["parent_id"] for r in await conn.fetch("SELECT id, parent_id FROM admin.business_units")}
    user_roles: dict[str, list[str]] = {}
    for r in await conn.fetch("SELECT user_id, role_id FROM admin.user_roles"):
        user_roles.setdefault(r["user_id"], []).append(r["role_id"])
    users = {
        r["id"]: User(
            r["id"],
            r["business_unit_id"],
            r["manager_id"],
            r["language"],
            r["enabled"],
            tuple(sorted(user_roles.get(r["id"], ()))),
        )
        for r in await conn.fetch("SELECT id, business_unit_id, manager_id, language, enabled FROM admin.users")
    }
    members: dict[str, list[str]] = {}
    for r in await conn.fetch("SELECT team_id, user_id FROM admin.team_members"):
        members.setdefault(r["team_id"], []).append(r["user_id"])
    team_roles: dict[str, list[str]] = {}
    for r in await conn.fetch("SELECT team_id, role_id FROM admin.team_roles"):
        team_roles.setdefault(r["team_id"], []).append(r["role_id"])
    teams = {
        r["id"]: Team(
            r["id"],
            r["business_unit_id"],
            tuple(sorted(members.get(r["id"], ()))),
            tuple(sorted(team_roles.get(r["id"], ()))),
        )
        for r in await conn.fetch("SELECT id, business_unit_id FROM admin.teams")
    }
    roles = {
        r["id"]: Role(r["id"], r["privileges"] or {}, r["read_offline_profile"])
        for r in await conn.fetch("SELECT id, privileges, read_offline_profile FROM admin.roles")
    }
    ownership = {
        r["logical_name"]: r["ownership"]
        for r in await conn.fetch("SELECT logical_name, ownership FROM admin.entities")
    }
    return OrgModel(users=users, teams=teams, bu_parent=bus, roles=roles, ownership=ownership)


async def apply_profile_event(conn: asyncpg.Connection, ev: ProfilePublished | ProfileDeleted) -> bool:
    """Record a publish/delete in the sync schema; False when it is older than what we have."""
    current = await conn.fetchval("SELECT version FROM sync.published_profiles WHERE profile_id = $1", ev.profile_id)
    if isinstance(ev, ProfileDeleted):
        await conn.execute(
            "INSERT INTO sync.published_profiles VALUES ($1, $2, '[]') ON CONFLICT (profile_id) DO UPDATE SET version = $2, items = '[]'",
            ev.profile_id,
            DELETED_VERSION,
        )
        await conn.execute("DELETE FROM sync.profile_members WHERE profile_id = $1", ev.profile_id)
        return True
    if current is not None and current > ev.version:
        return False
    items = [it.model_dump(mode="json") for it in ev.items]
    await conn.execute(
        "INSERT INTO sync.published_profiles VALUES ($1, $2, $3) ON CONFLICT (profile_id) DO UPDATE SET version = $2, items = $3",
        ev.profile_id,
        ev.version,
        items,
    )
    await conn.execute(
        "DELETE FROM sync.profile_members WHERE profile_id = $1 AND NOT (user_id = ANY($2::text[]))",
        ev.profile_id,
        ev.user_ids,
    )
    await conn.execute(
        """INSERT INTO sync.profile_members(user_id, profile_id) SELECT unnest($2::text[]), $1
           ON CONFLICT (user_id) DO UPDATE SET profile_id = EXCLUDED.profile_id""",
        ev.profile_id,
        ev.user_ids,
    )
    return True


def _items(raw: Sequence[dict]) -> list[ProfileItem]:
    return [ProfileItem(i["entity"], i["filter"], tuple(i.get("relationships") or ())) for i in raw]


def link_indexes_of(ev: ProfilePublished) -> dict[str, str]:
    """The link indexes (name -> DDL) the published profile's derived buckets can follow, known
    before its plan: the first copy builds them (``first_copy.premirror``)."""
    return item_link_indexes([ProfileItem(i.entity, i.filter, tuple(i.relationships)) for i in ev.items])


async def reconcile(
    conn: asyncpg.Connection, notify_topic: str, pool: asyncpg.Pool | None = None, *, hint: bool = False
) -> ReconcileResult:
    """Bring user_profiles/user_buckets/buckets to what the current org and profiles select.
    Call inside a transaction, which must not have written ops or index rows yet; takes the ops
    lock. With ``pool``, new buckets are filled over helper connections (bucket_writes._Helpers)."""
    clock = bucket_writes.Laps()
    await bucket_writes.lock_ops(conn)
    org = await load_org(conn)
    profiles = {
        r["profile_id"]: (r["version"], _items(r["items"]))
        for r in await conn.fetch("SELECT * FROM sync.published_profiles")
    }
    members = {
        r["user_id"]: r["profile_id"] for r in await conn.fetch("SELECT user_id, profile_id FROM sync.profile_members")
    }

    wanted_profile: dict[str, tuple[str, int]] = {}
    wanted_buckets: dict[str, set[str]] = {}
    defs: dict[str, BucketDef] = {}
    entities: set[str] = set()
    for user_id, profile_id in members.items():
        if user_id not in org.users or profile_id not in profiles or not org.can_use_offline(user_id):
            continue
        version, items = profiles[profile_id]
        entities.update(it.entity for it in items)
        wanted_profile[user_id] = (profile_id, version)
        planned = plan_user(org, items, user_id)
        wanted_buckets[user_id] = {b.id for b in planned}
        for b in planned:
            defs.setdefault(b.id, b)

    clock.lap("plan")
    existing = {r["id"] for r in await conn.fetch("SELECT id FROM sync.buckets")}
    new_defs = [d for i, d in defs.items() if i not in existing]
    result = ReconcileResult(new_buckets=len(new_defs))
    if new_defs:
        copied = await first_copy.mirror_records(conn, {d.entity for d in new_defs})
        clock.lap("mirror")
        # Helpers cannot see index rows this transaction copied: then it fills alone.
        helpers = pool if not copied else None
        result.ops_written = await bucket_writes.materialize(conn, new_defs, clock.laps, helpers)
        clock.lap("materialize")

    have_buckets: dict[str, set[str]] = {}
    for r in await conn.fetch("SELECT user_id, bucket_id FROM sync.user_buckets"):
        have_buckets.setdefault(r["user_id"], set()).add(r["bucket_id"])
    have_profile = {
        r["user_id"]: (r["profile_id"], r["profile_version"])
        for r in await conn.fetch("SELECT * FROM sync.user_profiles")
    }

    changed: set[str] = set()
    add_u, add_b, del_u, del_b = [], [], [], []
    for user_id in set(have_buckets) | set(wanted_buckets):
        want, have = wanted_buckets.get(user_id, set()), have_buckets.get(user_id, set())
        if want != have:
            changed.add(user_id)
            for bucket_id in want - have:
                add_u.append(user_id)
                add_b.append(bucket_id)
            for bucket_id in have - want:
                del_u.append(user_id)
                del_b.append(bucket_id)
    if del_u:
        await conn.execute(
            "DELETE FROM sync.user_buckets ub USING unnest($1::text[], $2::text[]) AS d(u, b) WHERE ub.user_id = d.u AND ub.bucket_id = d.b",
            del_u,
            del_b,
        )
    if add_u:
        await conn.execute(
            "INSERT INTO sync.user_buckets(user_id, bucket_id) SELECT * FROM unnest($1::text[], $2::text[])",
            add_u,
            add_b,
        )

    gone = [u for u in have_profile if u not in wanted_profile]
    upserts = [(u, p, v) for u, (p, v) in wanted_profile.items() if have_profile.get(u) != (p, v)]
    changed.update(gone)
    changed.update(u for u, _, _ in upserts)
    if gone:
        await conn.execute("DELETE FROM sync.user_profiles WHERE user_id = ANY($1::text[])", gone)
    if upserts:
        await conn.executemany(
            """INSERT INTO sync.user_profiles(user_id, profile_id, profile_version) VALUES ($1, $2, $3)
               ON CONFLICT (user_id) DO UPDATE SET profile_id = $2, profile_version = $3, updated_at = now()""",
            upserts,
        )

    unused = sorted(existing - set(defs))
    await bucket_writes.drop_buckets(conn, unused)
    result.dropped_buckets = len(unused)
    if new_defs or unused:
        await bucket_writes.bump_generation(conn)
    advanced = {}
    if new_defs:
        advanced = {
            r["id"]: r["last_op_id"]
            for r in await conn.fetch(
                "SELECT id, last_op_id FROM sync.buckets WHERE id = ANY($1::text[]) AND last_op_id > 0",
                [d.id for d in new_defs],
            )
        }
    result.changed_users = sorted(changed)
    await bucket_writes.notify(conn, notify_topic, advanced, result.changed_users, hint=hint)
    clock.lap("subscriptions")
    result.timings = clock.laps
    log.info(
        "reconciled",
        extra={
            "new_buckets": result.new_buckets,
            "dropped_buckets": result.dropped_buckets,
            "ops_written": result.ops_written,
            "changed_users": len(changed),
            "seconds": clock.laps,
        },
    )
    return result
