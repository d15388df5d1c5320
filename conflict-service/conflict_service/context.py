"""What every records and admin route works with: the authenticated caller (as the access rule
sees them), the pool, the topics and the outbox relay, handed over by one typed dependency so
routes never reach into app state themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from conflict_service import directory
from conflict_service.applier import Topics, topics_for
from offsync_shared import auth, outbox
from offsync_shared.domain.org import Actor
from offsync_shared.errors import Forbidden, Unauthenticated
from offsync_shared.runtime import Runtime


@dataclass(frozen=True)
class Ctx:
    actor: Actor
    pool: asyncpg.Pool
    topics: Topics
    relay: outbox.OutboxRelay | None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def publishing(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection whose committed outbox events are published as soon as it is released."""
        async with self.pool.acquire() as conn, outbox.publish_after_commit(self.relay):
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction whose outbox events are published right after it commits."""
        async with self.publishing() as conn, conn.transaction():
            yield conn


async def _actor(rt: Runtime, authorization: str | None) -> Actor:
    settings = rt.settings
    principal = auth.verify_token(
        settings.jwt_secret, auth.bearer(authorization), auth.ADMIN_AUDIENCE, issuer=settings.jwt_issuer
    )
    async with rt.pool.acquire() as conn:
        # A token naming an identity generation is only good for that incarnation of the id.
        actor = await directory.actor(conn, principal.user_id, principal.generation)
    if actor is None:
        raise Unauthenticated("unknown user")
    if not actor.enabled:
        raise Forbidden("user is disabled")
    return actor


async def _ctx(request: Request, authorization: Annotated[str | None, Header()] = None) -> Ctx:
    rt: Runtime = request.app.state.runtime
    actor = await _actor(rt, authorization)
    return Ctx(actor, rt.pool, topics_for(rt.settings.topic_prefix), rt.relay)


async def _admin_ctx(ctx: Annotated[Ctx, Depends(_ctx)]) -> Ctx:
    if not ctx.actor.is_admin:
        raise Forbidden("administrator role required")
    return ctx


CtxDep = Annotated[Ctx, Depends(_ctx)]  # any signed-in user, under their security roles
AdminCtxDep = Annotated[Ctx, Depends(_admin_ctx)]  # an administrator
