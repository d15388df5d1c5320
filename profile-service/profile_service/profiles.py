"""Stores mobile offline profiles in the admin schema: a profile's draft (head, items, people,
app modules) with optimistic concurrency, its published versions, and solution drafts.
Checking a whole draft and publishing it is ``publishing``'s."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from offsync_shared.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from profile_service import validation

PROFILE_COLS = "id, name, description, row_version, has_unpublished_changes, published_version, created_at, updated_at"


def etag(row_version: int) -> str:
    return f'"{row_version}"'


def check_if_match(if_match: str | None, row_version: int) -> None:
    """412 when the client's ETag is stale; no header means the client opted out."""
    if if_match is None:
        return
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    if "*" in tags or etag(row_version) in tags:
        return
    raise PreconditionFailed(
        f"profile changed since you read it (current ETag {etag(row_version)}); reload and retry", field="If-Match"
    )


async def lock_profile(conn: asyncpg.Connection, profile_id: str, if_match: str | None) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {PROFILE_COLS} FROM admin.profiles WHERE id = $1 FOR UPDATE", profile_id)
    if row is None:
        raise NotFound(f"profile {profile_id!r} not found")
    check_if_match(if_match, row["row_version"])
    return row


async def mark_changed(conn: asyncpg.Connection, profile_id: str) -> None:
    await conn.execute(
        """UPDATE admin.profiles SET has_unpublished_changes = true, row_version = row_version + 1, updated_at = now()
           WHERE id = $1""",
        profile_id,
    )


async def load_items(conn: asyncpg.Connection, profile_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT entity, filter, relationships, sync_interval_minutes FROM admin.profile_items WHERE profile_id = $1 ORDER BY entity",
        profile_id,
    )
    return [dict(r) for r in rows]


async def load_user_ids(conn: asyncpg.Connection, profile_id: str) -> list[str]:
    return [
        r["user_id"]
        for r in await conn.fetch(
            "SELECT user_id FROM admin.profile_users WHERE profile_id = $1 ORDER BY user_id", profile_id
        )
    ]


async def load_profile(conn: asyncpg.Connection, profile_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(f"SELECT {PROFILE_COLS} FROM admin.profiles WHERE id = $1", profile_id)
    if row is None:
        raise NotFound(f"profile {profile_id!r} not found")
    out = dict(row)
    out["items"] = await load_items(conn, profile_id)
    out["user_ids"] = await load_user_ids(conn, profile_id)
    out["app_module_ids"] = [
        r["app_module_id"]
        for r in await conn.fetch(
            "SELECT app_module_id FROM admin.app_module_profiles WHERE profile_id = $1 ORDER BY 1", profile_id
        )
    ]
    return out


async def load_metas(conn: asyncpg.Connection, names: Iterable[str] | None = None) -> dict[str, validation.EntityMeta]:
    if names is None:
        rows = await conn.fetch("SELECT * FROM admin.entities")
    else:
        rows = await conn.fetch("SELECT * FROM admin.entities WHERE logical_name = ANY($1::text[])", list(names))
    return {
        r["logical_name"]: validation.EntityMeta(
            logical_name=r["logical_name"],
            ownership=r["ownership"],
            attributes=r["attributes"],
            offline_enabled=r["offline_enabled"],
            offline_capable=r["offline_capable"],
        )
        for r in rows
    }


def raise_problems(problems: list[validation.Problem], *, only_entity: str | None = None) -> None:
    """Refuse a write with its problems (422); ``only_entity`` ignores pre-existing problems of other items."""
    if only_entity is not None:
        problems = [p for p in problems if p.entity == only_entity or p.code == "relationship_cycle"]
    if problems:
        first = problems[0]
        raise ValidationFailed(first.message, field=first.field, details={"problems": [p.as_dict() for p in problems]})


async def check_items_in_db(
    conn: asyncpg.Connection, items: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[validation.Problem]]:
    metas = await load_metas(conn)
    return validation.check_items(items, metas)


async def add_users(conn: asyncpg.Connection, profile_id: str, user_ids: list[str]) -> None:
    """Add users; a user already in another profile is a 409 naming it (a user has one profile)."""
    for i, uid in enumerate(user_ids):
        if not await conn.fetchval("SELECT 1 FROM admin.users WHERE id = $1", uid):
            raise ValidationFailed(f"user {uid!r} does not exist", field=f"user_ids[{i}]")
        inserted = await conn.fetchval(
            "INSERT INTO admin.profile_users(user_id, profile_id) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING RETURNING 1",
            uid,
            profile_id,
        )
        if not inserted:
            other = await conn.fetchrow(
                "SELECT p.id, p.name FROM admin.profile_users pu JOIN admin.profiles p ON p.id = pu.profile_id WHERE pu.user_id = $1",
                uid,
            )
            if other is not None and other["id"] != profile_id:
                raise Conflict(
                    f"user {uid!r} is already in mobile offline profile {other['name']!r} ({other['id']}); a user can be in one profile only",
                    field=f"user_ids[{i}]",
                    details={"user_id": uid, "profile_id": other["id"], "profile_name": other["name"]},
                )


# --- the draft: head, items, people, versions ----------------------------------------------------


async def summaries(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every profile by name, with how many items and users it has."""
    rows = await conn.fetch(
        f"""SELECT {PROFILE_COLS},
             (SELECT count(*) FROM admin.profile_items i WHERE i.profile_id = p.id) AS item_count,
             (SELECT count(*) FROM admin.profile_users u WHERE u.profile_id = p.id) AS user_count
           FROM admin.profiles p ORDER BY name"""
    )
    return [dict(r) for r in rows]


async def must_exist(conn: asyncpg.Connection, profile_id: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM admin.profiles WHERE id = $1", profile_id):
        raise NotFound(f"profile {profile_id!r} not found")


async def name_free(conn: asyncpg.Connection, name: str, profile_id: str | None = None) -> None:
    other = await conn.fetchval("SELECT id FROM admin.profiles WHERE name = $1", name)
    if other is not None and other != profile_id:
        raise Conflict(f"a profile named {name!r} already exists", field="name")


async def create(conn: asyncpg.Connection, profile_id: str, name: str, description: str) -> None:
    await name_free(conn, name)
    ok = await conn.fetchval(
        "INSERT INTO admin.profiles(id, name, description) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
        profile_id,
        name,
        description,
    )
    if not ok:
        raise Conflict(f"profile {profile_id!r} already exists", field="id")


async def update_head(conn: asyncpg.Connection, cur: asyncpg.Record, name: str | None, description: str | None) -> None:
    """Rename and/or describe the locked profile ``cur``; ``None`` keeps what is there."""
    if name is not None:
        await name_free(conn, name, cur["id"])
    await conn.execute(
        "UPDATE admin.profiles SET name = $2, description = $3 WHERE id = $1",
        cur["id"],
        name if name is not None else cur["name"],
        description if description is not None else cur["description"],
    )
    await mark_changed(conn, cur["id"])


async def delete(conn: asyncpg.Connection, profile_id: str) -> None:
    """Delete the (locked) profile with its published versions and effective membership."""
    await conn.execute("DELETE FROM admin.published_profile_users WHERE profile_id = $1", profile_id)
    await conn.execute("DELETE FROM admin.profile_versions WHERE profile_id = $1", profile_id)
    await conn.execute("DELETE FROM admin.profiles WHERE id = $1", profile_id)


async def insert_items(conn: asyncpg.Connection, profile_id: str, items: list[dict[str, Any]]) -> None:
    await conn.executemany(
        """INSERT INTO admin.profile_items(profile_id, entity, filter, relationships, sync_interval_minutes)
           VALUES ($1, $2, $3, $4, $5)""",
        [(profile_id, i["entity"], i["filter"], i["relationships"], i["sync_interval_minutes"]) for i in items],
    )


async def save_item(conn: asyncpg.Connection, profile_id: str, items: list[dict[str, Any]], changed: str) -> None:
    """Check the profile's ``items`` as they will be and store the one for entity ``changed``
    (only its problems refuse the write)."""
    normalized, problems = await check_items_in_db(conn, items)
    raise_problems(problems, only_entity=changed)
    new = next(i for i in normalized if i["entity"] == changed)
    await conn.execute(
        """INSERT INTO admin.profile_items(profile_id, entity, filter, relationships, sync_interval_minutes)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (profile_id, entity) DO UPDATE
           SET filter = EXCLUDED.filter, relationships = EXCLUDED.relationships, sync_interval_minutes = EXCLUDED.sync_interval_minutes""",
        profile_id,
        changed,
        new["filter"],
        new["relationships"],
        new["sync_interval_minutes"],
    )
    await mark_changed(conn, profile_id)


async def remove_item(conn: asyncpg.Connection, profile_id: str, entity: str) -> None:
    """Remove entity ``entity``'s item unless another item relates to it (409 naming them)."""
    items = await load_items(conn, profile_id)
    if not any(i["entity"] == entity for i in items):
        raise NotFound(f"{entity} is not in profile {profile_id!r}")
    dependents = sorted(i["entity"] for i in items if any(r.get("entity") == entity for r in i["relationships"]))
    if dependents:
        raise Conflict(
            f"{', '.join(dependents)} relate(s) to {entity}; remove those relationships first",
            field="entity",
            details={"items": dependents},
        )
    await conn.execute("DELETE FROM admin.profile_items WHERE profile_id = $1 AND entity = $2", profile_id, entity)
    await mark_changed(conn, profile_id)


async def remove_user(conn: asyncpg.Connection, profile_id: str, user_id: str) -> None:
    status = await conn.execute(
        "DELETE FROM admin.profile_users WHERE profile_id = $1 AND user_id = $2", profile_id, user_id
    )
    if status == "DELETE 0":
        raise NotFound(f"user {user_id!r} is not in profile {profile_id!r}")
    await mark_changed(conn, profile_id)


async def versions(conn: asyncpg.Connection, profile_id: str) -> list[dict[str, Any]]:
    await must_exist(conn, profile_id)
    rows = await conn.fetch(
        "SELECT version, published_at, published_by FROM admin.profile_versions WHERE profile_id = $1 ORDER BY version",
        profile_id,
    )
    return [dict(r) for r in rows]


async def snapshot(conn: asyncpg.Connection, profile_id: str, version: int) -> dict[str, Any]:
    snap: dict[str, Any] | None = await conn.fetchval(
        "SELECT snapshot FROM admin.profile_versions WHERE profile_id = $1 AND version = $2", profile_id, version
    )
    if snap is None:
        raise NotFound(f"profile {profile_id!r} has no published version {version}")
    return snap


async def clone(conn: asyncpg.Connection, source_id: str, new_id: str, name: str, description: str | None) -> None:
    """A new draft with the source's description (unless given) and items; people stay behind."""
    src = await load_profile(conn, source_id)
    await name_free(conn, name)
    await conn.execute(
        "INSERT INTO admin.profiles(id, name, description) VALUES ($1, $2, $3)",
        new_id,
        name,
        description if description is not None else src["description"],
    )
    await insert_items(conn, new_id, src["items"])


# --- solutions ------------------------------------------------------------------------------------


async def ids(conn: asyncpg.Connection, wanted: list[str] | None = None) -> list[str]:
    """Profile ids by name; with ``wanted``, those of them that exist."""
    if wanted is None:
        return [r["id"] for r in await conn.fetch("SELECT id FROM admin.profiles ORDER BY name")]
    return [r["id"] for r in await conn.fetch("SELECT id FROM admin.profiles WHERE id = ANY($1::text[])", wanted)]


async def lock_imports(conn: asyncpg.Connection) -> None:
    """Serialize solution imports until the caller's transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('admin:solution-import'))")


async def replace_draft(
    conn: asyncpg.Connection, name: str, description: str, items: list[dict[str, Any]], new_id: str
) -> tuple[str, bool]:
    """Make the draft of the profile called ``name`` hold ``items`` (creating it as ``new_id``
    when there is none); answers its id and whether it was created."""
    pid: str | None = await conn.fetchval("SELECT id FROM admin.profiles WHERE name = $1 FOR UPDATE", name)
    created = pid is None
    if pid is None:
        pid = new_id
        await conn.execute(
            "INSERT INTO admin.profiles(id, name, description) VALUES ($1, $2, $3)", pid, name, description
        )
    else:
        await conn.execute("UPDATE admin.profiles SET description = $2 WHERE id = $1", pid, description)
        await conn.execute("DELETE FROM admin.profile_items WHERE profile_id = $1", pid)
        await mark_changed(conn, pid)
    await insert_items(conn, pid, items)
    return pid, created
