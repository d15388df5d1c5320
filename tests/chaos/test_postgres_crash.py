"""Durability: PostgreSQL killed with SIGKILL (postmaster and every backend, no shutdown) right
after the records API acknowledged writes; once it is back, every acknowledged change is there.

The server is started durable (PostgreSQL's defaults) here even though the rest of the suite runs
its disposable databases without fsync: this is the promise `make up` makes (issue #20, item 0).
With ``synchronous_commit=off`` the last commits' WAL is still in shared memory when the kill
lands, and this test loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.embedded import EMBEDDED_BROKER_ENV, EmbeddedBroker, EmbeddedPostgres, free_port, rmtree
from offsync_stack.processes import SERVICES, ServiceGroup
from offsync_stack.testing import InfraEnv, until

pytestmark = pytest.mark.chaos

WRITERS = 8
WRITES_EACH = 40


def crash(pg: EmbeddedPostgres) -> None:
    """SIGKILL every process of the server at once, as a power loss stops them: nothing gets to
    flush what it still holds in memory. Each child of the postmaster is a session of its own
    (PostgreSQL calls setsid()), so killing the postmaster's process group killed the postmaster
    alone: the backends and the WAL writer exited on their own when they noticed, and a restart
    before the last of them had gone found the old shared memory still attached and refused to
    start. The server's processes are the ones working in its data directory; the postmaster is
    stopped first (a fork it is in finishes before it stops), so that none is forked while they
    are listed."""
    assert pg.proc is not None
    postmaster = psutil.Process(pg.proc.pid)
    postmaster.suspend()
    until(lambda: postmaster.status() == psutil.STATUS_STOPPED, timeout=10, message="the postmaster stopped")
    # The postmaster last: its children learn of its death at once (a signal on the parent's
    # death) and would get to log, if nothing more, before their own SIGKILL landed.
    server = sorted(_processes_in(pg.root / "pgdata"), key=lambda proc: proc.pid == postmaster.pid)
    for proc in server:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    pg.proc.wait()
    pg.proc = None
    _, alive = psutil.wait_procs(server, timeout=30)
    assert not alive and not _processes_in(pg.root / "pgdata"), "server processes alive after SIGKILL"


def _processes_in(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == pgdata:
                found.append(proc)
    return found


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
