"""Device fleets: real SDK devices (``offsync_device.Device`` + ``LocalStore``) in worker
processes of their own, so the clients never share an event loop with the harness or a service.

The harness talks to each worker over a pipe with small commands (open, close, resync, edit,
wait_for, arrivals, stop); every timestamp is ``time.time()`` taken in the worker when the SDK
has stored what arrived (``Device(on_ops=...)`` runs after ``LocalStore.apply_ops``).
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing as mp
import os
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

DeviceSpec = tuple[str, str, str]  # device id, user id, local store path (":memory:" or a file)


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard one (thousands of sockets per process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------- worker side ----
class _Worker:
    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.devices: dict[str, Any] = {}  # device id -> Device
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.stop = asyncio.Event()
        self.recording = False
        self.arrivals: list[tuple[str, str, int, float]] = []
        self.arrived = 0  # arrivals already taken by the harness since recording started
        self.seen: dict[tuple[str, int], float] = {}
        self.seen_changed = asyncio.Event()
        self.batch_sent: dict[str, float] = {}
        self.batch_acks: list[tuple[str, float, float, int, int]] = []  # device, sent, acked, changes, conflicts

    def _device(self, spec: DeviceSpec) -> Any:
        from offsync_device import Backoff, Device, LocalStore
        from offsync_shared.auth import DEVICE_AUDIENCE, issue_token

        did, uid, path = spec
        if did in self.devices:
            return self.devices[did]
        store = LocalStore(path)
        token = issue_token(self.secret, uid, DEVICE_AUDIENCE, ttl_seconds=6 * 3600, device_id=did)

        def on_ops(ops: list[Any], did: str = did) -> None:
            if not self.recording:
                return
            now = time.time()
            for op in ops:
                if op[2] == "put":
                    self.arrivals.append((did, op[4], op[5], now))
                    self.seen.setdefault((op[4], op[5]), now)
            self.seen_changed.set()

        dev = Device(self.url, store, token, device_id=did, on_ops=on_ops, backoff=Backoff())
        self._instrument(dev, did)
        self.devices[did] = dev
        return dev

    def _instrument(self, dev: Any, did: str) -> None:
        """Timestamps each upload batch when the SDK hands it to the socket and when its result
        is stored: the batch ack latency the upload workload reports."""
        store = dev.store
        next_batch, apply_result = store.next_batch, store.apply_result

        def timed_next_batch(max_changes: int) -> Any:
            b = next_batch(max_changes)
            if b is not None:
                self.batch_sent.setdefault(b.batch_id, time.time())
            return b

        def timed_apply_result(result: Any) -> Any:
            now = time.time()
            out = apply_result(result)
            sent = self.batch_sent.pop(result.batch_id, None)
            if sent is not None:
                conflicts = sum(1 for r in result.results if r.status == "conflict")
                self.batch_acks.append((did, sent, now, len(result.results), conflicts))
            return out

        store.next_batch = timed_next_batch
        store.apply_result = timed_apply_result

    async def open(self, specs: list[DeviceSpec], timeout: float) -> dict[str, Any]:
        """Connect every device and keep it connected (live); returns once each has reached its
        first checkpoint, or at the deadline with the count that did not."""
        if self.stop.is_set():  # after a close; devices of earlier opens share this event
            self.stop = asyncio.Event()
        devs = [self._device(s) for s in specs]
        start = {d.device_id: d.report.checkpoints for d in devs}
        for d in devs:
            self.tasks[d.device_id] = asyncio.create_task(d.run(self.stop))
        deadline = time.monotonic() + timeout
        while True:
            pending = [
                d for d in devs if d.report.checkpoints <= start[d.device_id] and not self.tasks[d.device_id].done()
            ]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # polling device state under a deadline
        failed = [d.device_id for d in devs if d.report.checkpoints <= start[d.device_id]]
        errors = [
            repr(self.tasks[f].exception()) for f in failed[:3] if self.tasks[f].done() and self.tasks[f].exception()
        ]
        return {
            "connected": len(devs) - len(failed),
            "failed": len(failed),
            "errors": errors,
            "records": sum(d.store.count() for d in devs),
        }

    async def close(self) -> dict[str, Any]:
        self.stop.set()
        tasks = list(self.tasks.values())
        self.tasks.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        return {"closed": len(tasks)}

    async def resync(self, timeout: float) -> dict[str, Any]:
        """Every device at once: connect, upload what is pending, download until caught up."""

        async def one(d: Any) -> tuple[str, float, float | None, str | None]:
            t0 = time.time()
            try:
                await d.sync(timeout=timeout)
                return d.device_id, t0, time.time(), None
            except Exception as exc:  # reported per device, never a number for it
                return d.device_id, t0, None, f"{type(exc).__name__}: {exc}"

        before = {did: d.report.connections for did, d in self.devices.items()}
        res = await asyncio.gather(*(one(d) for d in self.devices.values()))
        # Connections each device needed (more than one: refused by the gateway's rate cap, or cut).
        return {"devices": res, "connections": [d.report.connections - before[did] for did, d in self.devices.items()]}

    def edit(self, per_device: int, entity: str, note: str) -> dict[str, Any]:
        """Offline edits: update ``per_device`` held records of ``entity`` on each device."""
        edited: dict[str, list[str]] = {}
        for did, d in self.devices.items():
            ids = sorted(rid for rid, _ in d.store.list(entity, limit=100_000))[:per_device]
            for rid in ids:
                d.store.update(entity, rid, {"name": f"{rid}{note}"})
            edited[did] = ids
        return {"edited": edited}

    async def drop(self, create_every: int, entity: str, timeout: float) -> dict[str, Any]:
        """Every connected device loses its socket at the same moment (aborted, no close
        handshake) and reconnects by itself; every ``create_every``-th device first creates a
        record offline, uploaded on the reconnect. Returns once each device is connected again,
        caught up and has nothing pending (or at the deadline), with the ids it created."""
        devs = [d for did, d in self.devices.items() if did in self.tasks and not self.tasks[did].done()]
        start = {d.device_id: d.report.checkpoints for d in devs}
        created: dict[str, str] = {}
        t0 = time.time()
        for k, d in enumerate(devs):
            if create_every and k % create_every == 0:
                created[d.device_id] = d.store.create(entity, {"name": f"storm {d.device_id}"})
            if d.ws is not None and d.ws.transport is not None:
                d.ws.transport.abort()
        deadline = time.monotonic() + timeout
        while True:
            behind = [d for d in devs if d.report.checkpoints <= start[d.device_id] or d.store.has_pending()]
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # polling device state under a deadline
        return {
            "devices": len(devs),
            "behind": len(behind),
            "seconds": time.time() - t0,
            "created": created,
            "connections": sum(d.report.connections for d in devs),
        }

    def rows(self, entity: str) -> dict[str, Any]:
        """What each device holds of ``entity`` (id -> version), and its unresolved conflicts."""
        return {
            did: {
                "rows": {
                    rid: int(v)
                    for rid, v in d.store.db.execute("SELECT id, version FROM records WHERE entity = ?", (entity,))
                },
                "conflicts": len(d.store.conflicts()),
                "pending": d.store.has_pending(),
            }
            for did, d in self.devices.items()
        }

    async def wait_for(self, key: tuple[str, int], timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while key not in self.seen:
            self.seen_changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(self.seen_changed.wait(), left)
            except TimeoutError:
                return None
        return self.seen[key]

    def take_arrivals(self) -> list[tuple[str, str, int, float]]:
        out, self.arrivals = self.arrivals, []
        self.arrived += len(out)
        return out


async def _serve(conn: Connection, url: str, secret: str) -> None:
    from offsync_shared import heap

    raise_nofile()
    w = _Worker(url, secret)
    loop = asyncio.get_running_loop()
    while True:
        cmd, kw = await loop.run_in_executor(None, conn.recv)
        try:
            if cmd == "open":
                out: Any = await w.open([tuple(s) for s in kw["specs"]], kw.get("timeout", 120.0))
                # Hundreds of devices share this process (each phone would have its own): freeze
                # them, so the collector's full passes over all of them do not add to the
                # latencies measured here.
                heap.settle()
            elif cmd == "initial_sync":
                d = w._device(tuple(kw["spec"]))
                t0 = time.perf_counter()
                try:
                    await d.sync(timeout=kw["timeout"])
                    out = {"seconds": time.perf_counter() - t0, "records": d.store.count(), "error": None}
                except Exception as exc:
                    out = {"seconds": None, "records": d.store.count(), "error": f"{type(exc).__name__}: {exc}"}
            elif cmd == "close":
                out = await w.close()
            elif cmd == "resync":
                out = await w.resync(kw.get("timeout", 120.0))
            elif cmd == "drop":
                out = await w.drop(kw["create_every"], kw["entity"], kw["timeout"])
            elif cmd == "rows":
                out = w.rows(kw["entity"])
            elif cmd == "edit":
                out = w.edit(kw["per_device"], kw["entity"], kw["note"])
            elif cmd == "record":
                w.recording = bool(kw["on"])
                w.seen.clear()
                w.arrivals.clear()
                w.arrived = 0
                w.batch_acks.clear()
                out = {"recording": w.recording}
            elif cmd == "wait_for":
                out = await w.wait_for((kw["id"], kw["version"]), kw["timeout"])
            elif cmd == "arrivals":
                out = w.take_arrivals()
            elif cmd == "arrived":
                out = w.arrived + len(w.arrivals)
            elif cmd == "acks":
                out, w.batch_acks = w.batch_acks, []
            elif cmd == "count":
                out = {d: dev.store.count() for d, dev in w.devices.items()}
            elif cmd == "stop":
                await w.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {cmd}")
            conn.send(("ok", out))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def own_session() -> None:
    """Run in a session of one's own, as each service and the database do (start_new_session):
    with the kernel's autogroup scheduling each session gets an equal share of a busy CPU, so
    device workers left in the harness's session would share one share between them and be
    starved next to the server they measure."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader


def _worker_main(conn: Connection, url: str, secret: str) -> None:
    own_session()
    # The SDK is imported before the first command, not by the first device a workload makes:
    # its imports (~0.15-0.25 CPU-s) would land in the workload's ``cpu`` window otherwise.
    for module in ("offsync_device", "offsync_shared.auth"):
        importlib.import_module(module)
    asyncio.run(_serve(conn, url, secret))


# --------------------------------------------------------------------------- harness side ----
@dataclass
class _Proc:
    proc: Any
    conn: Connection


class Fleet:
    """N worker processes; devices are spread over them round-robin."""

    def __init__(self, url: str, secret: str, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[_Proc] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, url, secret), daemon=True)
            p.start()
            self.procs.append(_Proc(p, parent))
        self.pids = [p.proc.pid for p in self.procs]

    async def _call(self, i: int, cmd: str, kw: dict[str, Any]) -> Any:
        p = self.procs[i]
        await asyncio.to_thread(p.conn.send, (cmd, kw))
        status, out = await asyncio.to_thread(p.conn.recv)
        if status != "ok":
            raise RuntimeError(f"fleet worker {i}: {out}")
        return out

    async def all(self, cmd: str, **kw: Any) -> list[Any]:
        return list(await asyncio.gather(*(self._call(i, cmd, kw) for i in range(len(self.procs)))))

    async def each(self, cmd: str, per_proc: list[dict[str, Any]]) -> list[Any]:
        return list(await asyncio.gather(*(self._call(i, cmd, kw) for i, kw in enumerate(per_proc))))

    async def one(self, i: int, cmd: str, **kw: Any) -> Any:
        return await self._call(i, cmd, kw)

    async def open(self, specs: list[DeviceSpec], timeout: float = 180.0) -> dict[str, Any]:
        parts: list[list[DeviceSpec]] = [[] for _ in self.procs]
        for k, s in enumerate(specs):
            parts[k % len(parts)].append(s)
        res = await self.each("open", [{"specs": part, "timeout": timeout} for part in parts])
        return {
            "connected": sum(r["connected"] for r in res),
            "failed": sum(r["failed"] for r in res),
            "records": sum(r["records"] for r in res),
            "errors": [e for r in res for e in r["errors"]][:3],
        }

    async def stop(self) -> None:
        for i, p in enumerate(self.procs):
            if p.proc.is_alive():
                try:
                    await asyncio.wait_for(self._call(i, "stop", {}), 30)
                except Exception:
                    pass
            await asyncio.to_thread(p.proc.join, 10)
            if p.proc.is_alive():
                p.proc.kill()

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def default_processes(devices: int) -> int:
    """Two workers (one per core) for fleets above a few dozen devices, more past ~2,500 devices
    a worker so one event loop never holds too many sockets; at most 4."""
    if devices <= 50:
        return 1
    return min(4, max(2, (devices + 2499) // 2500))
