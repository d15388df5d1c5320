"""One running stack for the security findings' tests (package scope: started once), seeded
with two field workers, ann and bob, who each may sync a small published profile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, DEVICE_AUDIENCE, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra
from offsync_stack.processes import SERVICES, ServiceGroup
from offsync_stack.testing import InfraEnv, Stack, make_env, profiles_materialized, release_env

ROOT_BU = "00000000-0000-0000-0000-000000000100"
ADMIN_TOKEN = issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def device_token(user_id: str, device_id: str) -> str:
    return issue_token(DEV_JWT_SECRET, user_id, DEVICE_AUDIENCE, device_id=device_id)


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 300, f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.text}"
    return resp.json() if resp.content else None


@dataclass
class Findings:
    stack: Stack
    account: str  # an account record ann owns


# Short read timeouts, so test_read_timeouts sees half-sent requests cut off in seconds.
READ_TIMEOUT_S = 2.0


def _start(env: InfraEnv, log_dir: Path) -> Stack:
    group = ServiceGroup(
        env={
            **env.as_env(),
            "OFFSYNC_LOG_LEVEL": "INFO",
            "OFFSYNC_HTTP_HEADER_TIMEOUT_S": str(READ_TIMEOUT_S),
            "OFFSYNC_HTTP_BODY_IDLE_TIMEOUT_S": str(READ_TIMEOUT_S),
        },
        log_dir=log_dir,
    )
    try:
        for spec in SERVICES:
            group.start(spec, free_port())
        group.wait_ready(timeout=90)
    except BaseException:
        group.stop_all()
        raise
    return Stack(env, group)


@pytest_asyncio.fixture(scope="package")
async def findings(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Findings]:
    env = await make_env(infra, "sec")
    stack = await asyncio.to_thread(_start, env, tmp_path_factory.mktemp("sec-logs"))
    try:
        async with (
            httpx.AsyncClient(base_url=stack.admin_url, headers=ADMIN_HEADERS, timeout=15) as admin,
            httpx.AsyncClient(base_url=stack.records_url, headers=ADMIN_HEADERS, timeout=15) as records,
        ):
            ok(await admin.patch("/v1/entities/account", json={"offline_enabled": True}))
            own = {"create": "user", "read": "user", "write": "user", "delete": "user"}
            role = {"id": "field", "name": "Field", "read_offline_profile": True, "privileges": {"account": own}}
            ok(await admin.post("/v1/roles", json=role))
            for uid in ("ann", "bob"):
                user = {"id": uid, "name": uid.title(), "business_unit_id": ROOT_BU, "role_ids": ["field"]}
                ok(await admin.post("/v1/users", json=user))
            ok(await admin.post("/v1/profiles", json={"id": "field", "name": "Field"}))
            item = {"entity": "account", "filter": {"kind": "other", "user": True}}
            ok(await admin.post("/v1/profiles/field/items", json=item))
            ok(await admin.post("/v1/profiles/field/users", json={"user_ids": ["ann", "bob"]}))
            ok(await admin.post("/v1/profiles/field/publish"))
            rec = {"attributes": {"name": "Ann's"}, "owner_id": "ann", "business_unit_id": ROOT_BU}
            account = ok(await records.post("/v1/records/account", json=rec))["id"]
        # Publishing is asynchronous: a device connecting before publish-service has committed
        # the profile is refused 4004 no_profile (the first test here did, now and then).
        await profiles_materialized(stack, "ann", "bob")
        yield Findings(stack, account)
    finally:
        await asyncio.to_thread(stack.group.stop_all)
        await release_env(infra, env)
