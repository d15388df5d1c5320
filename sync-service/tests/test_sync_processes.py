"""sync-service as real OS processes: two gateways on one database and broker each push only to
their own devices, a device moving between them resumes from its cursor, and SIGTERM drains
(devices get 1001 and the process exits cleanly)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from offsync_device import Device, LocalStore
from offsync_shared import protocol as p
from offsync_stack.embedded import free_port
from offsync_stack.testing import eventually

pytestmark = pytest.mark.e2e


def spawn(gw: Any, port: int, log: Any) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **gw.env.as_env(),
        "OFFSYNC_SYNC_PORT": str(port),
        "OFFSYNC_LOG_LEVEL": "WARNING",
        "OFFSYNC_SYNC_DRAIN_TIMEOUT_S": "3",
    }
    return subprocess.Popen([sys.executable, "-m", "sync_service"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as c:
            r = await c.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return r.status_code == 200
    except httpx.HTTPError:
        return False


async def test_two_gateways_scale_out_and_sigterm_drains(gw: Any, tmp_path: Any) -> None:
    ports = [free_port(), free_port()]
    logs = [open(tmp_path / f"gw{i}.log", "wb") for i in range(2)]
    procs = [spawn(gw, port, log) for port, log in zip(ports, logs, strict=True)]
    try:
        for port in ports:
            await eventually(lambda port=port: ready(port), timeout=60, interval=0.1, message=f"gateway {port} ready")
        urls = [f"ws://127.0.0.1:{port}/v1/sync" for port in ports]
        user = await gw.user()
        bucket = f"b-{user}"
        await gw.subscribe(user, bucket)
        await gw.put(bucket, "account", {"s-1": {"v": 0}, "s-2": {"v": 0}})
        stores = [LocalStore(), LocalStore()]
        devices = [Device(urls[i], stores[i], gw.token(user)) for i in range(2)]
        stops = [asyncio.Event(), asyncio.Event()]
        runs = [asyncio.create_task(d.run(s)) for d, s in zip(devices, stops, strict=True)]
        for s in stores:
            await eventually(lambda s=s: _count(s, 2), timeout=15)
        op = await gw.put(bucket, "account", {"s-1": {"v": 1}})
        await gw.notify({bucket: op})
        for s in stores:  # each process pushed to its own device
            await eventually(lambda s=s: _val(s, {"v": 1}), timeout=15, message="live op on both gateways")
        # device 0 moves to gateway 1 and resumes from its cursor
        stops[0].set()
        await runs[0]
        before = devices[0].report.ops
        moved = Device(urls[1], stores[0], gw.token(user))
        report = await moved.sync(timeout=15)
        assert report.ops == 0 and report.checkpoints == 1, "resumed, nothing re-sent"
        del before
        # SIGTERM gateway 1 while device 1 is connected: it is told to go away (1001)
        raw = await connect(
            urls[0], additional_headers={"Authorization": f"Bearer {gw.token(user)}"}, ping_interval=None
        )
        await raw.send(p.encode(p.Hello(device_id="drain-me")))
        assert isinstance(p.decode_server(await raw.recv()), p.Welcome)
        procs[0].send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            try:
                while True:
                    await raw.recv()
            except Exception:
                pass
        assert raw.close_code == p.CLOSE_GOING_AWAY, (raw.close_code, raw.close_reason)
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown
        assert await asyncio.to_thread(procs[0].wait, 15) in (0, -signal.SIGTERM)
        stops[1].set()
        await runs[1]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


async def _count(store: LocalStore, n: int) -> bool:
    return store.count("account") == n


async def _val(store: LocalStore, want: Any) -> bool:
    return store.get("account", "s-1") == want
