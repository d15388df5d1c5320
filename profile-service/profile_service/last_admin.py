"""Refuses an org change that would leave nobody able to call the admin API (no enabled user
holding an administrator role, directly or through a team)."""

from __future__ import annotations

import asyncpg

from offsync_shared.errors import Conflict

ANY_ADMIN_SQL = """
SELECT EXISTS (
  SELECT 1 FROM admin.users u WHERE u.enabled AND (
    EXISTS (SELECT 1 FROM admin.user_roles ur JOIN admin.roles r ON r.id = ur.role_id WHERE ur.user_id = u.id AND r.is_admin)
    OR EXISTS (SELECT 1 FROM admin.team_members tm JOIN admin.team_roles tr ON tr.team_id = tm.team_id
               JOIN admin.roles r ON r.id = tr.role_id WHERE tm.user_id = u.id AND r.is_admin)))
"""


async def ensure_an_admin_remains(conn: asyncpg.Connection) -> None:
    """Call in the changing transaction, after the change.

    The lock serializes such changes, so two admins removing each other concurrently cannot
    both pass the check on snapshots that still show the other one (read committed: the check
    after the lock sees the first transaction's commit)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('admin:last-admin'))")
    if not await conn.fetchval(ANY_ADMIN_SQL):
        raise Conflict("this change would leave no enabled administrator")
