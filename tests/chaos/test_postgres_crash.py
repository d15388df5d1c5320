"""Durability: PostgreSQL killed with SIGKILL (postmaster and every backend, no shutdown) right
after the records API acknowledged writes; once it is back, every acknowledged change is there.

The server is started durable (PostgreSQL's defaults) here even though the rest of the suite runs
its disposable databases without fsync: this is the promise `make up` makes (issue #20, item 0).
With ``synchronous_commit=off`` the last commits' WAL is still in shared memory when the kill
lands, and this test loses them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path

import asyncpg
import httpx
import pytest

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.embedded import EMBEDDED_BROKER_ENV, EmbeddedBroker, EmbeddedPostgres, free_port, rmtree
from offsync_stack.processes import SERVICES, ServiceGroup
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.chaos

WRITERS = 8
WRITES_EACH = 40


def crash(pg: EmbeddedPostgres) -> None:
    """SIGKILL the whole server: the postmaster's process group holds every backend and the
    WAL writer, so nothing gets to flush what it still holds in memory."""
    assert pg.proc is not None
    os.killpg(pg.proc.pid, signal.SIGKILL)
    pg.proc.wait()
    pg.proc = None


async def test_acknowledged_writes_survive_a_postgres_crash() -> None:
    root = Path(tempfile.mkdtemp(prefix="offsync-pgcrash-"))
    pg, broker = EmbeddedPostgres(root / "pg", durable=True), EmbeddedBroker(root / "broker")
    group: ServiceGroup | None = None
    try:
        await asyncio.to_thread(pg.start)
        await asyncio.to_thread(broker.start)
        conn = await asyncpg.connect(pg.dsn())
        shown = {k: await conn.fetchval(f"SHOW {k}") for k in ("fsync", "synchronous_commit", "full_page_writes")}
        await conn.execute('CREATE DATABASE "crash"')
        await conn.close()
        assert shown == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
        env = InfraEnv(pg.dsn("crash"), broker.bootstrap, "crash.", dict(EMBEDDED_BROKER_ENV))
        group = ServiceGroup(env={**env.as_env(), "OFFSYNC_LOG_LEVEL": "WARNING"}, log_dir=root / "logs")
        port = {s.name: free_port() for s in SERVICES}
        for spec in SERVICES:
            if spec.name in ("profile-service", "conflict-service"):
                group.start(spec, port[spec.name])
        await asyncio.to_thread(group.wait_ready, 90)

        acked: dict[str, tuple[int, str]] = {}  # record id -> (version, name) the API acknowledged
        token = issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port['conflict-service']}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as api:

            async def writer(w: int) -> None:
                for i in range(WRITES_EACH):
                    rid = f"w{w}-{i % 10}"  # creates, then updates of the same records
                    name = f"writer {w} write {i}"
                    if rid in acked:
                        r = await api.patch(f"/v1/records/account/{rid}", json={"attributes": {"name": name}})
                    else:
                        r = await api.post("/v1/records/account", json={"id": rid, "attributes": {"name": name}})
                    assert r.status_code in (200, 201), r.text
                    acked[rid] = (r.json()["version"], name)

            await asyncio.gather(*(writer(w) for w in range(WRITERS)))
            crash(pg)  # right after the last acknowledgement

        await asyncio.to_thread(pg.start)  # crash recovery replays the WAL
        conn = await asyncpg.connect(pg.dsn("crash"))
        try:
            rows = await conn.fetch(
                "SELECT id, version, attributes ->> 'name' AS name FROM data.records WHERE entity = 'account'"
            )
        finally:
            await conn.close()
        stored = {r["id"]: (r["version"], r["name"]) for r in rows}
        lost = {rid: (want, stored.get(rid)) for rid, want in acked.items() if stored.get(rid) != want}
        assert len(acked) == WRITERS * 10
        assert not lost, f"{len(lost)} acknowledged changes lost in the crash, e.g. {list(lost.items())[:3]}"
    finally:
        if group is not None:
            await asyncio.to_thread(group.stop_all)
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(pg.stop)
        rmtree(root)
