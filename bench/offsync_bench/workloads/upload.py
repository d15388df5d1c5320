"""upload: devices that went offline with pending changes reconnect at once; each uploads its
changes (one batch), a share of which conflict with server-side changes made meanwhile (records
API bulk import). Run under both org conflict policies (client wins, then server wins).
Batch ack latency: from the SDK handing the batch to the socket to storing its result."""

from __future__ import annotations

import time
from typing import Any

import orjson

from offsync_bench import fixture, setup
from offsync_bench.context import BenchContext
from offsync_bench.cpuwait import stack_window
from offsync_bench.fleet import Fleet, default_processes
from offsync_bench.stats import percentile


async def _round(ctx: BenchContext, fleet: Fleet, policy: str, n_devices: int) -> dict[str, Any]:
    sz = ctx.sizes
    async with setup.admin_client(ctx) as admin:
        r = await admin.patch("/v1/org-settings", json={"conflict_detection": policy == "server_wins"})
        if r.status_code >= 300:
            raise RuntimeError(f"org-settings -> {r.status_code} {r.text[:200]}")
    # Offline edits on every device, then the server changes a share of the same records.
    edits = await fleet.all("edit", per_device=sz.upload_changes, entity="account", note=f" offline {policy}")
    per_device = {did: ids for e in edits for did, ids in e["edited"].items()}
    n_conf = max(1, round(sz.upload_changes * sz.upload_conflict_share))
    lines = []
    for did, ids in per_device.items():
        i = int(did.split("-")[1])
        for rid in ids[:n_conf]:
            j = int(rid.rsplit("-", 1)[1])
            lines.append(
                {
                    "id": rid,
                    "owner_id": fixture.side_user(i),
                    "owner_type": "user",
                    "attributes": fixture.side_account_attributes(i, j, f" server {policy}"),
                }
            )
    async with setup.records_client(ctx) as api:
        r = await api.post(
            "/v1/records/account/import",
            content=b"\n".join(orjson.dumps(x) for x in lines),
            headers={"Content-Type": "application/x-ndjson"},
        )
        if r.status_code >= 300:
            raise RuntimeError(f"server-side changes: import -> {r.status_code} {r.text[:200]}")
    await fleet.all("record", on=True)
    window = stack_window(ctx.pid, fleet.pids)
    window.start()
    t0 = time.time()
    res = await fleet.all("resync", timeout=300.0)
    cpu = window.stop()
    ends = [d for part in res for d in part["devices"]]
    errors = [e for _, _, _, e in ends if e]
    if errors:
        raise RuntimeError(f"{len(errors)} devices failed to upload: {errors[:2]}")
    acks = [a for part in await fleet.all("acks") for a in part]
    changes = sum(a[3] for a in acks)
    conflicts = sum(a[4] for a in acks)
    want = n_devices * sz.upload_changes
    if changes < want:
        raise RuntimeError(f"only {changes} of {want} changes acknowledged")
    first_sent = min(a[1] for a in acks)
    last_ack = max(a[2] for a in acks)
    ack_ms = [(a[2] - a[1]) * 1000 for a in acks]
    return {
        "changes": changes,
        "conflicts": conflicts,
        "expected_conflicts": len(lines),
        "batches": len(acks),
        "seconds": round(last_ack - first_sent, 3),
        "changes_per_s": round(changes / (last_ack - first_sent)),
        "p50_batch_ack_ms": round(percentile(ack_ms, 50), 1),
        "p99_batch_ack_ms": round(percentile(ack_ms, 99), 1),
        "reconnect_to_all_acked_s": round(max(e for _, _, e, _ in ends) - t0, 3),
        "cpu": cpu,
        "ack_ms": ack_ms,
    }


async def run(ctx: BenchContext) -> dict[str, Any]:
    await setup.side_published(ctx)
    n = ctx.sizes.upload_devices
    specs = [(f"up-{i}", fixture.side_user(i), ":memory:") for i in range(n)]
    by_policy: dict[str, dict[str, Any]] = {}
    async with Fleet(ctx.sync_ws, ctx.jwt_secret, default_processes(n)) as fleet:
        opened = await fleet.open(specs)
        if opened["failed"]:
            raise RuntimeError(f"{opened['failed']} of {n} devices did not sync: {opened['errors']}")
        await fleet.all("close")
        for policy in ("client_wins", "server_wins"):
            by_policy[policy] = await _round(ctx, fleet, policy, n)
    ack_ms = [x for r in by_policy.values() for x in r.pop("ack_ms")]
    changes = sum(r["changes"] for r in by_policy.values())
    busy = sum(r["seconds"] for r in by_policy.values())  # first batch sent -> last ack, per round
    return {
        "changes_per_s": round(changes / busy),
        "p99_batch_ack_ms": round(percentile(ack_ms, 99), 1),
        "conflicts": sum(r["conflicts"] for r in by_policy.values()),
        "changes": changes,
        "devices": n,
        "by_policy": by_policy,
    }
