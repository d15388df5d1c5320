"""What every admin route works with: the authenticated admin, the pool, the event emitter and
the settings, handed over by one dependency so routes never reach into app state themselves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from offsync_shared.settings import CommonSettings
from profile_service.access import Admin, AdminDep
from profile_service.admin_events import Emitter


@dataclass
class Ctx:
    admin: Admin
    pool: asyncpg.Pool
    emitter: Emitter
    settings: CommonSettings

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn:
            yield conn


async def _ctx(request: Request, admin: AdminDep) -> Ctx:
    rt = request.app.state.runtime
    return Ctx(admin=admin, pool=rt.pool, emitter=request.app.state.emitter, settings=rt.settings)


CtxDep = Annotated[Ctx, Depends(_ctx)]


def new_id(given: str | None) -> str:
    return given or str(uuid.uuid4())
