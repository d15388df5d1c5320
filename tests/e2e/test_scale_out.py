"""Scale-out on Apache Kafka (``make test-kafka``): two processes each of conflict-service,
publish-service and sync-service share the work through consumer groups, devices reach the two
gateways through HAProxy (websockets). One process of each is SIGKILLed mid-load: nothing
acknowledged is lost or applied twice and every device converges. A device moved from one gateway
to the other resumes from its checkpoint instead of downloading its set again."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from offsync_device.local_store import LocalStore
from offsync_stack.balancer import Balancer
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra
from offsync_stack.testing import eventually
from tests.chaos.harness import (
    SPECS,
    USERS,
    ChaosStack,
    Load,
    TrackedDevice,
    admin_headers,
    device_token,
    ok,
    probe,
    quiesce_and_check,
    setup_org,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SCALED = ("conflict-service", "publish-service", "sync-service")
LOAD_S = 4.0


async def test_two_of_each_one_of_each_killed_mid_load(infra: Infra, tmp_path: Path) -> None:
    s = await ChaosStack.on_infra(infra, {"OFFSYNC_SYNC_PAGE_SIZE": "200"})
    lb: Balancer | None = None
    load: Load | None = None
    try:
        second = {svc: free_port() for svc in SCALED}
        for svc, port in second.items():
            s.group.start(SPECS[svc], port, instance=f"{svc}-2")
        await asyncio.to_thread(s.group.wait_ready, 90, [f"{svc}-2" for svc in SCALED])
        lb = Balancer(tmp_path / "lb", [s.ports["sync-service"], second["sync-service"]])
        await asyncio.to_thread(lb.start)
        s.ws_override = lb.ws_url
        await setup_org(s, bulk_records=100)
        load = await Load.start(s, tmp_path)
        await asyncio.sleep(LOAD_S)  # load duration before the kill, not a wait for a condition
        gw2 = await _sessions(second["sync-service"])
        assert gw2 > 0, "HAProxy sent no device to the second gateway"
        for svc in SCALED:
            s.group.kill(f"{svc}-2")
        await probe(s, load.devices, 1, 120)
        await asyncio.sleep(LOAD_S)  # the load goes on with one process of each
        load.running.clear()
        verdict = await quiesce_and_check(s, load.devices, timeout=120)
        applied = sum(len(d.applied_log) for d in load.devices)
        assert verdict.ok, f"lost {verdict.lost}, duplicates {verdict.duplicates}, leaked {verdict.leaked}: {verdict}"
        assert applied > 0
        print(f"\nscale-out: {gw2} devices were on the killed gateway; {applied} changes applied, none lost or twice")
    finally:
        if load is not None:
            await load.close()
        if lb is not None:
            await asyncio.to_thread(lb.stop)
        await s.stop()


async def test_device_moved_between_gateways_resumes_from_its_checkpoint(infra: Infra, tmp_path: Path) -> None:
    s = await ChaosStack.on_infra(infra, {})
    try:
        port2 = free_port()
        s.group.start(SPECS["sync-service"], port2, instance="sync-service-2")
        await asyncio.to_thread(s.group.wait_ready, 90, ["sync-service-2"])
        await setup_org(s, bulk_records=10)
        user = USERS[0]
        did = f"mover-{uuid.uuid4().hex[:6]}"
        store = LocalStore(tmp_path / f"{did}.sqlite")
        gw1 = s.url("sync-service").replace("http://", "ws://") + "/v1/sync"
        gw2 = f"ws://127.0.0.1:{port2}/v1/sync"
        first = TrackedDevice(gw1, store, device_token(user, did), device_id=did, user=user)
        r1 = await first.sync(timeout=60)
        held = len(store.db.execute("SELECT id FROM records").fetchall())
        assert r1.ops >= held > 0
        cursor = store.cursor
        async with httpx.AsyncClient(base_url=s.url("conflict-service"), headers=admin_headers(), timeout=30) as c:
            ok(await c.patch(f"/v1/records/account/srv-{user}-0", json={"attributes": {"name": "after the move"}}))
        moved = TrackedDevice(gw2, store, device_token(user, did), device_id=did, user=user)

        async def got_it() -> bool:
            await moved.sync(timeout=30)
            return (store.get("account", f"srv-{user}-0") or {}).get("name") == "after the move"

        await eventually(got_it, timeout=60, interval=0.2, message="the change reached the moved device")
        assert store.cursor > cursor
        assert moved.report.ops < held, f"the other gateway sent {moved.report.ops} ops: a full download, not a resume"
    finally:
        await s.stop()


async def _sessions(port: int) -> int:
    """Open device sessions on one gateway, from its Prometheus metrics."""
    async with httpx.AsyncClient(timeout=5) as c:
        text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith("offsync_connected_devices "):
            return int(float(line.split()[-1]))
    return 0
