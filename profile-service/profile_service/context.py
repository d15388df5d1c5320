"""What every admin route works with: the authenticated admin, the pool, the event emitter and
the settings, handed over by one dependency so routes never reach into app state themselves.
Every change made through ``Ctx.tx`` writes its audit entry in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from offsync_shared.settings import CommonSettings
from profile_service import audit
from profile_service.admin_access import Admin, AdminDep
from profile_service.admin_events import Emitter


@dataclass
class Ctx:
    admin: Admin
    pool: asyncpg.Pool
    emitter: Emitter
    settings: CommonSettings
    request: Request | None = None

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction for an admin change; its audit entry is written in it, last."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn
            if self.request is not None and self.request.method in audit.MUTATING:
                await audit.write(conn, await self._audit_entry())

    async def _audit_entry(self) -> audit.Entry:
        r = self.request
        assert r is not None
        route = getattr(r.scope.get("route"), "path", r.url.path)
        return audit.entry_for(
            self.admin.user_id,
            r.client.host if r.client else None,
            r.method,
            r.url.path,
            route,
            dict(r.path_params),
            await r.body(),  # already read (and size-capped) for the route: cached on the request
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            yield conn


async def _ctx(request: Request, admin: AdminDep) -> Ctx:
    rt = request.app.state.runtime
    return Ctx(admin=admin, pool=rt.pool, emitter=request.app.state.emitter, settings=rt.settings, request=request)


CtxDep = Annotated[Ctx, Depends(_ctx)]


def new_id(given: str | None) -> str:
    return given or str(uuid.uuid4())
