"""Fixtures of profile-service's tests: the app (see profile_harness) and an admin HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from profile_harness import Service

from offsync_stack.infra import Infra
from offsync_stack.testing import make_env, release_env
from profile_service.app import create_app
from profile_service.settings import Settings


@pytest_asyncio.fixture(scope="module")
async def service(infra: Infra) -> AsyncIterator[Service]:
    env = await make_env(infra, "prof")
    settings = Settings(**env.settings_kwargs())
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Service(app, settings, env)
    await release_env(infra, env)


@pytest_asyncio.fixture(scope="module")
async def admin(service: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with service.client(service.token()) as c:
        yield c
