"""Opt-in measurements (OFFSYNC_SYNC_SCALE=<devices>, e.g. 2000): idle connections on one
gateway process (RSS per device) and a reconnect storm (every device 20 changes behind,
reconnecting at once, until all are caught up). Skipped by default: it is a benchmark."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import psutil
import pytest
from test_sync_processes import ready, spawn
from websockets.asyncio.client import connect

from offsync_shared import protocol as p
from offsync_stack.embedded import free_port
from offsync_stack.testing import eventually

pytestmark = pytest.mark.e2e
N = int(os.environ.get("OFFSYNC_SYNC_SCALE", "0"))


async def open_device(
    url: str, token: str, device: str, cursor: int, checksums: dict[str, int]
) -> tuple[Any, int, dict[str, int]]:
    ws = await connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        ping_interval=None,
        max_size=None,
        open_timeout=60,
    )
    # Like the SDK: a checkpoint may ride inside the ops frame.
    hello = p.Hello(device_id=device, cursor=cursor, checksums=checksums, features=(p.FEATURE_OPS_CHECKPOINT,))
    await ws.send(p.encode(hello))
    while True:
        f = p.decode_server(await ws.recv())
        if isinstance(f, p.Ops) and f.checkpoint is not None:
            f = f.checkpoint
        if isinstance(f, p.Checkpoint):
            return ws, f.cursor, f.checksums


@pytest.mark.skipif(N <= 0, reason="set OFFSYNC_SYNC_SCALE=<devices> to run")
async def test_idle_connections_and_reconnect_storm(gw: Any, tmp_path: Any) -> None:
    port = free_port()
    log = open(tmp_path / "gw.log", "wb")
    os.environ["OFFSYNC_SYNC_CONN_RATE"] = "100000"
    os.environ["OFFSYNC_SYNC_CONN_BURST"] = "100000"
    proc = spawn(gw, port, log)
    try:
        await eventually(lambda: ready(port), timeout=60, interval=0.1)
        url = f"ws://127.0.0.1:{port}/v1/sync"
        user = await gw.user()
        bucket = f"b-{user}"
        await gw.subscribe(user, bucket)
        await gw.put(
            bucket,
            "account",
            {f"r{i}": {"i": i} for i in range(int(os.environ.get("OFFSYNC_SYNC_SCALE_RECORDS", "50")))},
        )
        token = gw.token(user, ttl=7200)
        rss0 = psutil.Process(proc.pid).memory_info().rss
        conns = []
        for k in range(0, N, 200):
            conns += await asyncio.gather(*(open_device(url, token, f"d{i}", 0, {}) for i in range(k, min(N, k + 200))))
        await asyncio.sleep(1.0)  # let the gateway settle before reading RSS (measurement, not a wait-for)
        rss1 = psutil.Process(proc.pid).memory_info().rss
        per_device_kb = (rss1 - rss0) / N / 1024
        cursor, checksums = conns[0][1], conns[0][2]
        for ws, _, _ in conns:
            await ws.close()
        for i in range(20):
            await gw.put(bucket, "account", {f"r{i}": {"i": i, "v": 2}})
        gateway = psutil.Process(proc.pid)
        cpu0 = sum(gateway.cpu_times()[:2])
        t0 = time.perf_counter()
        back = await asyncio.gather(*(open_device(url, token, f"d{i}", cursor, checksums) for i in range(N)))
        storm = time.perf_counter() - t0
        # The gateway's own CPU for the storm (the devices share this machine's cores).
        storm_cpu = sum(gateway.cpu_times()[:2]) - cpu0
        assert all(c > cursor for _, c, _ in back)
        for ws, _, _ in back:
            await ws.close()
        figures = {
            "connections": {"devices": N, "rss_kb_per_device": round(per_device_kb, 1)},
            "reconnect": {
                "devices": N,
                "seconds_to_all_caught_up": round(storm, 2),
                "gateway_cpu_ms_per_device": round(storm_cpu * 1000 / N, 2),
            },
        }
        print("\nSYNC SCALE", json.dumps(figures))
    finally:
        os.environ.pop("OFFSYNC_SYNC_CONN_RATE", None)
        os.environ.pop("OFFSYNC_SYNC_CONN_BURST", None)
        proc.terminate()
        proc.wait(15)
        log.close()


FANOUT = int(os.environ.get("OFFSYNC_SYNC_FANOUT", "0"))


@pytest.mark.skipif(FANOUT <= 0, reason="set OFFSYNC_SYNC_FANOUT=<devices> to run")
async def test_fanout_latency(gw: Any, tmp_path: Any) -> None:
    """FANOUT devices (one user each) share one bucket; 30 changes at ~10/s; every device must
    receive each change. Reports deliveries/s and commit -> received latency."""
    port = free_port()
    log = open(tmp_path / "gw.log", "wb")
    os.environ["OFFSYNC_SYNC_CONN_RATE"] = "100000"
    os.environ["OFFSYNC_SYNC_CONN_BURST"] = "100000"
    proc = spawn(gw, port, log)
    try:
        await eventually(lambda: ready(port), timeout=60, interval=0.1)
        url = f"ws://127.0.0.1:{port}/v1/sync"
        shared = f"b-shared-{port}"
        await gw.pool.execute("INSERT INTO sync.buckets(id) VALUES ($1)", shared)
        await gw.put(shared, "product", {"p-0": {"v": 0}})
        users = [await gw.user() for _ in range(FANOUT)]
        for u in users:
            await gw.subscribe(u, shared)
        conns = []
        for k in range(0, FANOUT, 200):
            conns += await asyncio.gather(*(open_device(url, gw.token(u), f"f-{u}", 0, {}) for u in users[k : k + 200]))
        received: dict[int, list[float]] = {}

        async def reader(ws: Any) -> None:
            async for raw in ws:
                f = p.decode_server(raw)
                if isinstance(f, p.Ping):
                    await ws.send(p.encode(p.Pong(t=f.t)))
                elif isinstance(f, p.Ops):
                    now = time.perf_counter()
                    for op in f.ops:
                        received.setdefault(op[6]["v"], []).append(now)

        readers = [asyncio.create_task(reader(ws)) for ws, _, _ in conns]
        committed: dict[int, float] = {}
        gateway = psutil.Process(proc.pid)
        cpu0 = sum(gateway.cpu_times()[:2])
        t0 = time.perf_counter()
        for v in range(1, 31):
            op = await gw.put(shared, "product", {f"p-{v}": {"v": v}})  # distinct records: compaction keeps each
            committed[v] = time.perf_counter()
            await gw.notify({shared: op})
            await asyncio.sleep(0.1)  # the workload's pace: ~10 changes/s
        await eventually(lambda: _all(received, 30, FANOUT), timeout=60)
        elapsed = max(max(ts) for ts in received.values()) - t0
        # The gateway's own CPU per delivery: steadier than latency on a shared, noisy machine.
        cpu_ms = (sum(gateway.cpu_times()[:2]) - cpu0) * 1000
        lat = sorted((t - committed[v]) * 1000 for v, ts in received.items() if v in committed for t in ts)
        figures = {
            "fanout": {
                "devices": FANOUT,
                "changes": 30,
                "deliveries": len(lat),
                "deliveries_per_s": round(len(lat) / elapsed),
                "p50_ms": round(lat[len(lat) // 2], 1),
                "p99_ms": round(lat[int(len(lat) * 0.99)], 1),
                "gateway_cpu_us_per_delivery": round(cpu_ms * 1000 / len(lat), 1),
            }
        }
        print("\nSYNC FANOUT", json.dumps(figures))
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for ws, _, _ in conns:
            await ws.close()
    finally:
        os.environ.pop("OFFSYNC_SYNC_CONN_RATE", None)
        os.environ.pop("OFFSYNC_SYNC_CONN_BURST", None)
        proc.terminate()
        proc.wait(15)
        log.close()


async def _all(received: dict[int, list[float]], changes: int, devices: int) -> bool:
    return all(len(received.get(v, ())) >= devices for v in range(1, changes + 1))


TRACE = int(os.environ.get("OFFSYNC_SYNC_TRACEMALLOC", "0"))

# Runs sync-service under tracemalloc; SIGUSR1 writes a snapshot to the path in OFFSYNC_TRACE_OUT.
_TRACED_MAIN = """
import os, runpy, signal, tracemalloc
tracemalloc.start(int(os.environ.get("OFFSYNC_TRACE_FRAMES", "12")))
def _dump(*_):
    import gc
    gc.collect()
    tracemalloc.take_snapshot().dump(os.environ["OFFSYNC_TRACE_OUT"])
    open(os.environ["OFFSYNC_TRACE_OUT"] + ".done", "w").close()
signal.signal(signal.SIGUSR1, _dump)
runpy.run_module("sync_service", run_name="__main__")
"""


@pytest.mark.skipif(TRACE <= 0, reason="set OFFSYNC_SYNC_TRACEMALLOC=<devices> to run")
async def test_idle_session_memory_by_line(gw: Any, tmp_path: Any) -> None:
    """What one idle device holds in the gateway, by allocating line: tracemalloc snapshots of a
    gateway process with N and with 2N idle devices; the difference / N is the per-device cost.
    Prints the largest lines and a total (Python heap only: the kernel's socket buffers and
    allocator overhead are not in it)."""
    import signal
    import subprocess
    import sys
    import tracemalloc

    port = free_port()
    log = open(tmp_path / "gw.log", "wb")
    out = tmp_path / "snap"
    env = {
        **os.environ,
        **gw.env.as_env(),
        "OFFSYNC_SYNC_PORT": str(port),
        "OFFSYNC_LOG_LEVEL": "WARNING",
        "OFFSYNC_SYNC_CONN_RATE": "100000",
        "OFFSYNC_SYNC_CONN_BURST": "100000",
        "OFFSYNC_TRACE_OUT": str(out),
        # These clients read nothing (no pongs): keep their sessions open for the whole run.
        "OFFSYNC_SYNC_IDLE_TIMEOUT_S": "3600",
        "OFFSYNC_SYNC_HEARTBEAT_S": "1800",
    }
    proc = subprocess.Popen([sys.executable, "-c", _TRACED_MAIN], env=env, stdout=log, stderr=subprocess.STDOUT)

    async def snapshot(name: str) -> tracemalloc.Snapshot:
        done = tmp_path / "snap.done"
        done.unlink(missing_ok=True)
        proc.send_signal(signal.SIGUSR1)
        await eventually(lambda: _exists(done), timeout=120, interval=0.2, message="snapshot written")
        return tracemalloc.Snapshot.load(str(out))

    try:
        await eventually(lambda: ready(port), timeout=180, interval=0.2)  # traced: slow start
        url = f"ws://127.0.0.1:{port}/v1/sync"
        users = [await gw.user() for _ in range(max(1, TRACE // 10))]
        for u in users:
            await gw.subscribe(u, f"b-{u}")
            await gw.subscribe(u, "b-shared-trace")
            await gw.put(f"b-{u}", "account", {f"{u}-r{i}": {"i": i} for i in range(5)})
        conns: list[Any] = []

        async def open_more(n: int) -> None:
            start = len(conns)
            for k in range(start, start + n, 200):
                conns.extend(
                    await asyncio.gather(
                        *(
                            open_device(url, gw.token(users[i % len(users)]), f"t{i}", 0, {})
                            for i in range(k, min(start + n, k + 200))
                        )
                    )
                )

        await open_more(TRACE)
        first = await snapshot("n")
        await open_more(TRACE)
        second = await snapshot("2n")
        stats = second.compare_to(first, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"\nTRACEMALLOC {TRACE} more idle devices: {total / TRACE:.0f} B per device")
        for s in stats[:40]:
            print(f"{s.size_diff / TRACE:8.0f} B {s.count_diff / TRACE:6.2f} blocks  {s.traceback[0]}")
        for s in second.compare_to(first, "traceback")[:12]:
            print(f"--- {s.size_diff / TRACE:.0f} B per device")
            for line in s.traceback.format()[-16:]:
                print(line)
        for ws, _, _ in conns:
            await ws.close()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


async def _exists(path: Any) -> bool:
    return bool(path.exists())
