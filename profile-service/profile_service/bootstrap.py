"""Seeds an empty admin schema once: root business unit, System Administrator role, the bootstrap
admin user, org settings and the standard entity catalogue — safe when replicas start together."""

from __future__ import annotations

import asyncpg

from offsync_shared.auth import BOOTSTRAP_ADMIN_USER_ID
from profile_service import identity
from profile_service.admin_events import Emitter
from profile_service.catalogue import STANDARD_ENTITIES

ROOT_BUSINESS_UNIT_ID = "00000000-0000-0000-0000-000000000100"
SYSTEM_ADMIN_ROLE_ID = "00000000-0000-0000-0000-000000000200"
SYSTEM_ADMIN_ROLE_NAME = "System Administrator"
ALL_PRIVILEGES = {"*": {p: "organization" for p in ("create", "read", "write", "delete")}}


async def bootstrap(pool: asyncpg.Pool, emitter: Emitter) -> bool:
    """Create the initial organization if the org settings row does not exist yet.

    Returns whether this call created it. The advisory lock makes a second replica wait and then
    see the row, so the seed is written exactly once; the org settings row is the marker, so an
    admin's later edits (e.g. removing a role from the bootstrap user) are never undone.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('bootstrap:admin'))")
        if await conn.fetchval("SELECT 1 FROM admin.org_settings WHERE org_id = 'default'"):
            return False
        await conn.execute("INSERT INTO admin.org_settings(org_id) VALUES ('default')")
        root = await conn.fetchval(
            "SELECT id FROM admin.business_units WHERE parent_id IS NULL ORDER BY created_at LIMIT 1"
        )
        if root is None:
            root = ROOT_BUSINESS_UNIT_ID
            await conn.execute(
                "INSERT INTO admin.business_units(id, name, parent_id) VALUES ($1, 'Organization', NULL)", root
            )
        role_id = await conn.fetchval(
            """INSERT INTO admin.roles(id, name, is_admin, read_offline_profile, privileges)
               VALUES ($1, $2, true, true, $3) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id""",
            SYSTEM_ADMIN_ROLE_ID,
            SYSTEM_ADMIN_ROLE_NAME,
            ALL_PRIVILEGES,
        )
        await conn.execute(
            """INSERT INTO admin.users(id, name, business_unit_id) VALUES ($1, 'Administrator', $2)
               ON CONFLICT (id) DO NOTHING""",
            BOOTSTRAP_ADMIN_USER_ID,
            root,
        )
        await conn.execute(
            "INSERT INTO admin.user_roles(user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            BOOTSTRAP_ADMIN_USER_ID,
            role_id,
        )
        for ent in STANDARD_ENTITIES:
            await conn.execute(
                """INSERT INTO admin.entities(logical_name, display_name, ownership, offline_enabled, attributes)
                   VALUES ($1, $2, $3, false, $4) ON CONFLICT (logical_name) DO NOTHING""",
                ent["logical_name"],
                ent["display_name"],
                ent["ownership"],
                ent["attributes"],
            )
        await emitter.business_unit(conn, root)
        await emitter.role(conn, role_id)
        await emitter.user(conn, BOOTSTRAP_ADMIN_USER_ID)
        for ent in STANDARD_ENTITIES:
            await emitter.entity(conn, ent["logical_name"])
        return True


async def ensure_admin_credentials(pool: asyncpg.Pool, username: str, password: str | None, env: str) -> bool:
    """Give the bootstrap admin ``username`` and ``password`` if it has no password yet.

    Returns whether it did. An admin who already has a password keeps it (and its username): the
    setting only seeds a fresh organization. A username held by another user is left alone.
    """
    if not password:
        return False
    async with pool.acquire() as conn:
        if await conn.fetchval(
            "SELECT password_hash IS NOT NULL FROM admin.users WHERE id = $1", BOOTSTRAP_ADMIN_USER_ID
        ) in (None, True):
            return False
    password_hash = await identity.hash_new_password(password, env, field="OFFSYNC_BOOTSTRAP_ADMIN_PASSWORD")
    assert password_hash is not None
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('bootstrap:admin'))")
        row = await conn.fetchrow(
            "SELECT password_hash FROM admin.users WHERE id = $1 FOR UPDATE", BOOTSTRAP_ADMIN_USER_ID
        )
        if row is None or row["password_hash"] is not None:
            return False
        if not await conn.fetchval(
            "SELECT 1 FROM admin.users WHERE lower(username) = lower($1) AND id <> $2",
            username,
            BOOTSTRAP_ADMIN_USER_ID,
        ):
            await identity.set_username(conn, BOOTSTRAP_ADMIN_USER_ID, username)
        await identity.store_password_hash(conn, BOOTSTRAP_ADMIN_USER_ID, password_hash)
        return True
