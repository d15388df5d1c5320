"""End to end over real websockets: a gateway on a free port, a real database and broker, and
devices driven through the SDK (or a raw client where the test needs byte-level control)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from offsync_device import Device, LocalStore
from offsync_device.client import SyncRefused
from offsync_shared import protocol as p
from offsync_shared.checksum import op_hash
from offsync_stack.testing import eventually

pytestmark = pytest.mark.e2e


def recs(n: int, prefix: str = "a", **extra: Any) -> dict[str, dict[str, Any]]:
    return {f"{prefix}-{i:05d}": {"name": f"{prefix} {i}", "n": i, **extra} for i in range(n)}


async def raw_client(gw: Any, user: str, *, device: str | None = None, cursor: int = 0,
                     checksums: dict[str, int] | None = None, token: str | None = None) -> Any:
    ws = await connect(gw.url, additional_headers={"Authorization": f"Bearer {token or gw.token(user)}"},
                       compression=None, max_size=None, ping_interval=None)
    await ws.send(p.encode(p.Hello(device_id=device or str(uuid.uuid4()), cursor=cursor, checksums=checksums or {})))
    return ws


async def until(ws: Any, kind: type, timeout: float = 10.0) -> Any:
    """Read frames until one of ``kind`` arrives; returns (frame, frames seen before it)."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            f = p.decode_server(await ws.recv())
            if isinstance(f, kind):
                return f, seen
            seen.append(f)


async def test_initial_download_then_live_delta(gw: Any) -> None:
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}-1", f"b-{user}-2")
    await gw.put(f"b-{user}-1", "account", recs(1200, "acc"))
    await gw.put(f"b-{user}-2", "contact", recs(300, "con"))
    progress: list[tuple[int, int]] = []
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user), on_progress=lambda d, t: progress.append((d, t)))
    report = await device.sync(timeout=30)
    assert store.count("account") == 1200 and store.count("contact") == 300
    assert report.checkpoints >= 1 and report.cursor == store.cursor > 0
    assert progress[-1][0] == progress[-1][1] == 1500
    assert len(progress) >= 3, "downloaded in bounded pages"
    assert store.get("account", "acc-00007") == {"name": "acc 7", "n": 7}
    # live: stay connected, change one record server-side, it arrives via notify (no polling)
    stop = asyncio.Event()
    task = asyncio.create_task(device.run(stop))
    await eventually(lambda: _connected(gw, store.device_id()), timeout=10, message="device connected")
    t0 = time.perf_counter()
    op = await gw.put(f"b-{user}-1", "account", {"acc-00007": {"name": "renamed"}})
    await gw.notify({f"b-{user}-1": op})
    await eventually(lambda: _value(store, "account", "acc-00007", {"name": "renamed"}), timeout=10, message="live op stored")
    assert time.perf_counter() - t0 < 5
    await eventually(lambda: _cursor_at(store, op), timeout=10, message="checkpoint after the live op")
    stop.set()
    await task


async def _connected(gw: Any, device_id: str) -> bool:
    return device_id in gw.gateway.hub.by_device


async def _value(store: LocalStore, entity: str, rid: str, want: Any) -> bool:
    return store.get(entity, rid) == want


async def _cursor_at(store: LocalStore, op: int) -> bool:
    return store.cursor >= op
