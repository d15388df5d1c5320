"""Writes admin events to the outbox in the caller's transaction, each carrying the full new state
of what changed (read back from the admin schema so the event never disagrees with the table)."""

from __future__ import annotations

import asyncpg

from offsync_shared import outbox
from offsync_shared.events import Event
from offsync_shared.events.admin import (
    BusinessUnitChanged,
    EntityChanged,
    RoleChanged,
    TeamChanged,
    UserChanged,
)
from offsync_shared.events.sync_notify import SessionsRevoked
from offsync_shared.topics import ADMIN, SYNC_NOTIFY
from profile_service import sessions

SCHEMA = "admin"
ORG_KEY = "default"


class Emitter:
    """Knows the topic prefix; every admin event goes to one topic keyed by the org id."""

    def __init__(self, topic_prefix: str) -> None:
        self.topic = ADMIN.full(topic_prefix)
        self.notify_topic = SYNC_NOTIFY.full(topic_prefix)

    async def emit(self, conn: asyncpg.Connection, event: Event) -> None:
        await outbox.enqueue(conn, SCHEMA, self.topic, event.envelope(ORG_KEY))

    async def sessions_revoked(self, conn: asyncpg.Connection, event: SessionsRevoked) -> None:
        """Tell the sync gateways (they read sync-notify, not admin) to close the sessions of the
        sign-ins just revoked in this transaction, instead of letting them run to token expiry."""
        await outbox.enqueue(conn, SCHEMA, self.notify_topic, event.envelope(event.user_id))

    async def user(self, conn: asyncpg.Connection, user_id: str) -> None:
        row = await conn.fetchrow(
            """SELECT u.id, u.business_unit_id, u.manager_id, u.language, u.enabled,
                      COALESCE((SELECT array_agg(team_id ORDER BY team_id) FROM admin.team_members WHERE user_id = u.id), '{}') AS team_ids,
                      COALESCE((SELECT array_agg(role_id ORDER BY role_id) FROM admin.user_roles WHERE user_id = u.id), '{}') AS role_ids
               FROM admin.users u WHERE u.id = $1""",
            user_id,
        )
        if row is not None:
            await self.emit(conn, UserChanged(**dict(row.items())))
        # Every change to what a user may do passes through here: sign-ins it no longer allows
        # (disabled, offline privilege or admin role gone) are revoked in the same transaction.
        await sessions.revoke_lost_access(conn, [user_id])

    async def user_deleted(self, conn: asyncpg.Connection, user_id: str, business_unit_id: str) -> None:
        await self.emit(conn, UserChanged(id=user_id, business_unit_id=business_unit_id, deleted=True))

    async def team(self, conn: asyncpg.Connection, team_id: str) -> None:
        row = await conn.fetchrow(
            """SELECT t.id, t.business_unit_id,
                      COALESCE((SELECT array_agg(user_id ORDER BY user_id) FROM admin.team_members WHERE team_id = t.id), '{}') AS member_ids,
                      COALESCE((SELECT array_agg(role_id ORDER BY role_id) FROM admin.team_roles WHERE team_id = t.id), '{}') AS role_ids
               FROM admin.teams t WHERE t.id = $1""",
            team_id,
        )
        if row is not None:
            await self.emit(conn, TeamChanged(**dict(row.items())))
            await sessions.revoke_lost_access(conn, list(row["member_ids"]))

    async def business_unit(self, conn: asyncpg.Connection, bu_id: str) -> None:
        row = await conn.fetchrow("SELECT id, parent_id, name FROM admin.business_units WHERE id = $1", bu_id)
        if row is not None:
            await self.emit(conn, BusinessUnitChanged(**dict(row)))

    async def role(self, conn: asyncpg.Connection, role_id: str) -> None:
        row = await conn.fetchrow(
            "SELECT id, name, privileges, read_offline_profile, is_admin FROM admin.roles WHERE id = $1", role_id
        )
        if row is not None:
            await self.emit(conn, RoleChanged(**dict(row)))
        await sessions.revoke_lost_access(conn, await _holders(conn, role_id))

    async def entity(self, conn: asyncpg.Connection, logical_name: str) -> None:
        row = await conn.fetchrow(
            "SELECT logical_name, ownership, offline_enabled, attributes FROM admin.entities WHERE logical_name = $1",
            logical_name,
        )
        if row is not None:
            await self.emit(conn, EntityChanged(**dict(row)))


async def _holders(conn: asyncpg.Connection, role_id: str) -> list[str]:
    """Users holding ``role_id`` directly or through a team."""
    rows = await conn.fetch(
        """SELECT user_id FROM admin.user_roles WHERE role_id = $1
           UNION SELECT tm.user_id FROM admin.team_members tm JOIN admin.team_roles tr ON tr.team_id = tm.team_id
           WHERE tr.role_id = $1""",
        role_id,
    )
    return [r["user_id"] for r in rows]
