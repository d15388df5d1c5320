"""Stores the links between org rows (team members, team roles, user roles): adding one is
idempotent and needs both ends to exist; removing one that is not there is a 404 naming both."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from offsync_shared.errors import NotFound
from profile_service import rows


@dataclass(frozen=True, slots=True)
class Link:
    """A link table ``admin.<table>(<owner_col>, <other_col>)``; the owner is the row the route's
    path names first (the team of a team member)."""

    table: str
    owner_table: str
    owner_col: str
    owner_what: str
    other_table: str
    other_col: str
    other_what: str
    missing: str  # the 404 when removing an absent link; {owner} and {other} are filled in

    async def add(self, conn: asyncpg.Connection, owner_id: str, other_id: str) -> None:
        await rows.must_exist(conn, self.owner_table, owner_id, self.owner_what)
        await rows.must_exist(conn, self.other_table, other_id, self.other_what)
        await self.add_many(conn, owner_id, [other_id])

    async def add_many(self, conn: asyncpg.Connection, owner_id: str, other_ids: Iterable[str]) -> None:
        """Link without checking (the caller checked both ends)."""
        await conn.executemany(
            f"INSERT INTO admin.{self.table}({self.owner_col}, {self.other_col}) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(owner_id, o) for o in other_ids],
        )

    async def remove(self, conn: asyncpg.Connection, owner_id: str, other_id: str) -> None:
        await rows.must_exist(conn, self.owner_table, owner_id, self.owner_what)
        status = await conn.execute(
            f"DELETE FROM admin.{self.table} WHERE {self.owner_col} = $1 AND {self.other_col} = $2", owner_id, other_id
        )
        if status == "DELETE 0":
            raise NotFound(self.missing.format(owner=repr(owner_id), other=repr(other_id)))


TEAM_MEMBER = Link(
    "team_members",
    "teams",
    "team_id",
    "team",
    "users",
    "user_id",
    "user",
    "user {other} is not a member of team {owner}",
)
TEAM_ROLE = Link(
    "team_roles", "teams", "team_id", "team", "roles", "role_id", "role", "role {other} is not assigned to team {owner}"
)
USER_ROLE = Link(
    "user_roles", "users", "user_id", "user", "roles", "role_id", "role", "role {other} is not assigned to user {owner}"
)
# A user's teams are the team_members table seen from the user's side.
USER_TEAM = Link(
    "team_members",
    "users",
    "user_id",
    "user",
    "teams",
    "team_id",
    "team",
    "user {owner} is not a member of team {other}",
)
