"""`make up` (python -m offsync_stack up): the whole stack becomes ready, writes stack.json, and a
SIGTERM leaves no process behind; a second start on the same state directory works too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from offsync_stack.embedded import free_port

pytestmark = pytest.mark.e2e


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"supervisor exited early with {proc.returncode}:\n{out[-3000:]}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.1)  # polling for a file another process writes; bounded by the deadline
    raise AssertionError(f"{path} not written within {timeout}s")


def _connection_names(dsn: str) -> set[str]:
    async def names() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database()"
            )
            return {r["application_name"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(names())


@pytest.mark.parametrize("attempt", [1, 2], ids=["first-up", "second-up-same-state"])
def test_up_reaches_readiness_and_sigterm_leaves_nothing(
    tmp_path_factory: pytest.TempPathFactory, attempt: int
) -> None:
    state = tmp_path_factory.getbasetemp() / "stack-state"  # shared by both attempts on purpose
    env = {
        **os.environ,
        **{
            k: str(free_port())
            for k in ("OFFSYNC_PROFILE_PORT", "OFFSYNC_CONFLICT_PORT", "OFFSYNC_SYNC_PORT", "OFFSYNC_PUBLISH_PORT")
        },
    }
    for k in ("OFFSYNC_PG_DSN", "OFFSYNC_KAFKA_BOOTSTRAP", "OFFSYNC_TOPIC_PREFIX"):
        env.pop(k, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "offsync_stack", "up", "--state-dir", str(state)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        info = _wait_for_file(state / "stack.json", proc, timeout=60)
        # It holds an admin token: owner-only (security finding 1).
        assert (state / "stack.json").stat().st_mode & 0o777 == 0o600
        pids = info["pids"]
        assert set(pids) >= {
            "profile-service",
            "conflict-service",
            "publish-service",
            "sync-service",
            "postgres",
            "broker",
        }
        for url in (
            info["admin_api"],
            info["records_api"],
            str(info["device_ws"]).replace("ws://", "http://").removesuffix("/v1/sync"),
        ):
            assert httpx.get(f"{url}/readyz", timeout=5).json()["ready"] is True
        docs = httpx.get(str(info["admin_docs"]), timeout=5)
        assert docs.status_code == 200
        console = httpx.get(str(info["console"]), timeout=5, follow_redirects=True)
        assert console.status_code == 200 and "Sign in to the admin console" in console.text
        # The bootstrap admin signs in with what make up printed and wrote (the same on a restart).
        login = {"username": info["admin_username"], "password": info["admin_password"], "audience": "admin"}
        signed = httpx.post(f"{info['admin_api']}/v1/auth/login", json=login, timeout=10)
        assert signed.status_code == 200 and signed.json()["is_admin"] is True, signed.text
        # The field app: its shell, and where it signs in (profile-service, which allows its origin).
        shell = httpx.get(str(info["field_app"]), timeout=5)
        assert shell.status_code == 200 and "Offsync field app" in shell.text
        config = httpx.get(f"{info['field_app']}config.json", timeout=5).json()
        assert config == {"auth_url": info["admin_api"], "sync_path": "/v1/sync"}
        origin = str(info["field_app"]).removesuffix("/app/")
        preflight = httpx.options(
            f"{config['auth_url']}/v1/auth/login",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
            timeout=5,
        )
        assert preflight.headers.get("access-control-allow-origin") == origin
        # Each service's connections say whose they are (pg_stat_activity, the server's log).
        assert _connection_names(str(info["pg_dsn"])) >= {
            "profile-service",
            "conflict-service",
            "publish-service",
            "sync-service",
            "sync-service reads",
        }
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        # A quiet start: no warnings a reader can do nothing about (capped topics on the one-node
        # broker, platformdirs' XDG_RUNTIME_DIR).
        assert out.decode(errors="replace").startswith("Offsync is up."), out.decode(errors="replace")[:2000]
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
        assert f"admin sign-in {info['admin_username']} / {info['admin_password']}" in out.decode(errors="replace")
        assert f"console      {info['console']}" in out.decode(errors="replace")  # the address is printed
        children = list(pids.values())
        alive = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"processes left behind: {alive}"
        assert not (state / "stack.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
