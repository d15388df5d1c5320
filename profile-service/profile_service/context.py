"""What every admin route works with: the authenticated admin, the pool, the event emitter and
the settings, handed over by one dependency so routes never reach into app state themselves.
Every change made through ``Ctx.tx`` writes its audit entry in the same transaction. Routes
without an admin (sign-in, a device's metadata) get a connection and the settings the same way."""

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
from profile_service.settings import Settings


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


async def _conn(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with request.app.state.runtime.pool.acquire() as conn:
        yield conn


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.runtime.pool
    return pool


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.runtime.settings
    return settings


# For routes that do not need an admin: a pooled connection for the request (or the pool, for a
# route that checks its caller before it takes a connection), and the settings.
ConnDep = Annotated[asyncpg.Connection, Depends(_conn)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def new_id(given: str | None) -> str:
    return given or str(uuid.uuid4())
