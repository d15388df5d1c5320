"""directory.actors reads each user's access facts in one statement (the business-unit subtree
walked in SQL): it must give what the domain's own functions compute from the raw tables."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from conflict_org import ADMIN, ALICE, BOB, CAROL, DAVE, migrated_pool, seed

from conflict_service import directory
from offsync_shared.domain.org import Actor, bu_subtree, combine_privileges
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

LOOPED = "looped"  # a user in a business unit whose parents run in a circle


@pytest_asyncio.fixture
async def pool(fresh_env: InfraEnv) -> AsyncIterator[asyncpg.Pool]:
    pool = await migrated_pool(fresh_env.pg_dsn)
    try:
        await seed(pool)
        async with pool.acquire() as c:
            # Deeper than the seed (root > sales > east > east-1 > east-1-a), and a loop the walk
            # must leave (loop-a > loop-b > loop-a): parents set after both rows exist.
            await c.execute(
                """INSERT INTO admin.business_units(id, name, parent_id) VALUES ('east-1', 'E1', 'east'),
                          ('east-1-a', 'E1a', 'east-1'), ('loop-a', 'LA', NULL), ('loop-b', 'LB', 'loop-a');
                   UPDATE admin.business_units SET parent_id = 'loop-b' WHERE id = 'loop-a';
                   INSERT INTO admin.teams(id, name, business_unit_id) VALUES ('admins', 'Admins', 'east');
                   INSERT INTO admin.team_roles VALUES ('admins', 'sysadmin')"""
            )
            await c.execute("INSERT INTO admin.users(id, name, business_unit_id) VALUES ($1, $1, 'loop-a')", LOOPED)
            await c.execute("INSERT INTO admin.team_members VALUES ('admins', $1), ('team-sales', $1)", CAROL)
        yield pool
    finally:
        await pool.close()


async def reference(conn: asyncpg.Connection, user_id: str) -> Actor | None:
    """The actor as the domain functions build it from every row of the tables."""
    user = await conn.fetchrow("SELECT business_unit_id, enabled FROM admin.users WHERE id = $1", user_id)
    if user is None:
        return None
    parents = {r["id"]: r["parent_id"] for r in await conn.fetch("SELECT id, parent_id FROM admin.business_units")}
    teams = {
        r["team_id"] for r in await conn.fetch("SELECT team_id FROM admin.team_members WHERE user_id = $1", user_id)
    }
    roles: list[Any] = await conn.fetch(
        """SELECT r.privileges, r.is_admin FROM admin.roles r
            WHERE r.id IN (SELECT role_id FROM admin.user_roles WHERE user_id = $1)
               OR r.id IN (SELECT role_id FROM admin.team_roles WHERE team_id = ANY($2::text[]))""",
        user_id,
        sorted(teams),
    )
    return Actor(
        user_id=user_id,
        business_unit_id=user["business_unit_id"],
        team_ids=frozenset(teams),
        bu_subtree=bu_subtree(parents, user["business_unit_id"]),
        privileges=combine_privileges(r["privileges"] for r in roles),
        enabled=user["enabled"],
        is_admin=any(r["is_admin"] for r in roles),
    )


async def test_actors_match_the_domain_reference_for_every_user(pool: asyncpg.Pool) -> None:
    users = [ADMIN, ALICE, BOB, CAROL, DAVE, LOOPED, "nobody"]
    async with pool.acquire() as conn:
        got = await directory.actors(conn, users)
        for uid in users:
            assert got.get(uid) == await reference(conn, uid), uid
    assert got[ADMIN].bu_subtree == {"root", "sales", "east", "east-1", "east-1-a"}
    assert got[LOOPED].bu_subtree == {"loop-a", "loop-b"}
    assert got[CAROL].is_admin and got[CAROL].team_ids == {"admins", "team-sales"}  # by a team's role
    assert "nobody" not in got


async def test_an_actor_is_only_the_incarnation_its_token_names(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        generation = await conn.fetchval("SELECT generation FROM admin.users WHERE id = $1", ALICE)
        assert await directory.actor(conn, ALICE, None) == await reference(conn, ALICE)
        assert await directory.actor(conn, ALICE, generation) == await reference(conn, ALICE)
        assert await directory.actor(conn, ALICE, "an-earlier-incarnation") is None
        assert await directory.actor(conn, "nobody", None) is None
