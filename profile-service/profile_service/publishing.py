"""Checks a profile's whole draft (every problem at once, with per-user record estimates against
the org's cap) and publishes it: an immutable version snapshot, the users' effective membership
and the profile.published event, in the caller's transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from offsync_shared.errors import ValidationFailed
from offsync_shared.events.admin import ProfileItemSnapshot, ProfilePublished
from profile_service.admin_events import Emitter
from profile_service.estimates import UserContext, estimate, is_exact, records_table_exists
from profile_service.profiles import check_items_in_db, load_items, load_user_ids, lock_profile


async def validate(conn: asyncpg.Connection, profile_id: str, *, for_publish: bool = False) -> dict[str, Any]:
    """Every problem of the profile at once, plus per-user estimates when records exist.

    ``for_publish``: estimates are only needed for the records-per-user cap's errors, which only
    exact items make (``_cap_problems``), so they are skipped when all live records of those
    items' entities together stay under the cap (no user can exceed it): on a 5M-record org the
    estimates' scans took ~25 s of the publish call."""
    items = await load_items(conn, profile_id)
    user_ids = await load_user_ids(conn, profile_id)
    _, found = await check_items_in_db(conn, items)
    problems = [{**p.as_dict(), "severity": "error"} for p in found]
    if not items:
        problems.append(
            {
                "code": "profile_empty",
                "message": "the profile has no entities; its users get no data",
                "severity": "warning",
            }
        )
    users = await conn.fetch(
        """SELECT u.id, u.enabled, u.business_unit_id,
             COALESCE((SELECT array_agg(team_id) FROM admin.team_members WHERE user_id = u.id), '{}') AS team_ids,
             EXISTS (SELECT 1 FROM admin.roles r WHERE r.read_offline_profile AND (
                 r.id IN (SELECT role_id FROM admin.user_roles WHERE user_id = u.id)
                 OR r.id IN (SELECT tr.role_id FROM admin.team_roles tr JOIN admin.team_members tm ON tm.team_id = tr.team_id
                             WHERE tm.user_id = u.id))) AS can_read
           FROM admin.users u WHERE u.id = ANY($1::text[]) ORDER BY u.id""",
        user_ids,
    )
    for u in users:
        if not u["enabled"]:
            problems.append(
                {
                    "code": "user_disabled",
                    "message": f"user {u['id']} is disabled",
                    "user_id": u["id"],
                    "severity": "warning",
                }
            )
        if not u["can_read"]:
            problems.append(
                {
                    "code": "user_cannot_read_profile",
                    "message": f"user {u['id']} has no role with read access to mobile offline profiles and will get no offline data",
                    "user_id": u["id"],
                    "severity": "warning",
                }
            )
    cap = int(
        await conn.fetchval("SELECT max_records_per_user FROM admin.org_settings WHERE org_id = 'default'") or 3_000_000
    )
    estimates: list[dict[str, Any]] | None = None
    if (
        items
        and not found
        and await records_table_exists(conn)
        and not (for_publish and await _under_cap(conn, [i for i in items if is_exact(i)], cap))
    ):
        ctxs = [UserContext(u["id"], u["business_unit_id"], frozenset(u["team_ids"])) for u in users]
        estimates = await estimate(conn, items, ctxs)
        for e in estimates:
            problems.extend(_cap_problems(e, cap))
    return {
        "valid": not any(p["severity"] == "error" for p in problems),
        "problems": problems,
        "max_records_per_user": cap,
        "estimates": estimates,
    }


def _cap_problems(e: dict[str, Any], cap: int) -> list[dict[str, Any]]:
    """A user over the cap on exact counts alone is an error. A user over it only through an upper
    bound (custom filters and relationships count every record of their entity) is a warning:
    refusing the publish on a bound would block large orgs whose real sets are far smaller."""
    if e["records"] <= cap:
        return []
    over = [i["entity"] for i in e["items"] if i["records"] > 0]
    exact = sum(i["records"] for i in e["items"] if i["exact"])
    if exact > cap:
        return [
            {
                "code": "records_per_user_cap",
                "message": f"user {e['user_id']} would carry {e['records']} records, over the cap of {cap}",
                "user_id": e["user_id"],
                "severity": "error",
                "details": {"records": e["records"], "cap": cap, "items": over},
            }
        ]
    bounded = [i["entity"] for i in e["items"] if not i["exact"] and i["records"] > 0]
    return [
        {
            "code": "records_per_user_cap_possible",
            "message": (
                f"user {e['user_id']} could carry up to {e['records']} records, over the cap of {cap}: "
                f"{', '.join(bounded)} counted as every record of the entity (custom filter or relationship)"
            ),
            "user_id": e["user_id"],
            "severity": "warning",
            "details": {"records": e["records"], "exact_records": exact, "cap": cap, "items": over, "bounded": bounded},
        }
    ]


async def _under_cap(conn: asyncpg.Connection, items: list[dict[str, Any]], cap: int) -> bool:
    """Whether every record of the exact items' entities, tombstones too, fits under the cap:
    then no user can exceed it and the per-user estimates are skipped. Counting tombstones
    loosens the bound a little and lets PostgreSQL count from the ``(entity, modified_at)``
    index alone once the table is vacuumed (10 ms instead of 0.2-0.3 s over 250k records of
    a 750k-record org: docs/performance.md, "publish", round eight)."""
    bound = await conn.fetchval(
        "SELECT count(*) FROM data.records WHERE entity = ANY($1::text[])", [i["entity"] for i in items]
    )
    return int(bound) <= cap


async def publish(
    conn: asyncpg.Connection, emitter: Emitter, profile_id: str, if_match: str | None, by: str
) -> dict[str, Any]:
    cur = await lock_profile(conn, profile_id, if_match)
    report = await validate(conn, profile_id, for_publish=True)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    if errors:
        raise ValidationFailed(
            f"profile has {len(errors)} problem(s): {errors[0]['message']}",
            field=errors[0].get("field"),
            details={"problems": report["problems"]},
        )
    items = await load_items(conn, profile_id)
    user_ids = await load_user_ids(conn, profile_id)
    version = (cur["published_version"] or 0) + 1
    snapshot = {"name": cur["name"], "description": cur["description"], "items": items, "user_ids": user_ids}
    await conn.execute(
        "INSERT INTO admin.profile_versions(profile_id, version, snapshot, published_by) VALUES ($1, $2, $3, $4)",
        profile_id,
        version,
        snapshot,
        by,
    )
    await conn.execute(
        "DELETE FROM admin.published_profile_users WHERE profile_id = $1 AND NOT (user_id = ANY($2::text[]))",
        profile_id,
        user_ids,
    )
    # A user moved here from another profile leaves that one's effective membership now.
    await conn.execute(
        """INSERT INTO admin.published_profile_users(user_id, profile_id, version)
           SELECT u, $2, $3 FROM unnest($1::text[]) AS u
           ON CONFLICT (user_id) DO UPDATE SET profile_id = EXCLUDED.profile_id, version = EXCLUDED.version""",
        user_ids,
        profile_id,
        version,
    )
    await conn.execute(
        """UPDATE admin.profiles SET published_version = $2, has_unpublished_changes = false,
               row_version = row_version + 1, updated_at = now() WHERE id = $1""",
        profile_id,
        version,
    )
    await emitter.emit(
        conn,
        ProfilePublished(
            profile_id=profile_id,
            version=version,
            name=cur["name"],
            items=[ProfileItemSnapshot(**i) for i in items],
            user_ids=user_ids,
        ),
    )
    return {"version": version, "validation": report}
