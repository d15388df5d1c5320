"""browser_initial_sync and browser_live: the TypeScript SDK in headless Chromium with its
IndexedDB store, next to the Python SDK's initial_sync and live.

browser_initial_sync: the bulk user's whole set (every generated account) from an empty
IndexedDB until the first checkpoint is stored (db.synced() waits for the store); also how long
reopening that store takes, the page's main-thread busy time and the CPU all of Chromium used,
which tell the browser's cost from the wait for pages on a busy machine.
browser_live: server-side changes through the records API, one at a time; latency from the
write's commit timestamp to the record's new version being visible through db.watch, split at
the moment its frame reached the page (before it: server, broker and network; after it: the SDK
decoding, applying and re-running the watch)."""

from __future__ import annotations

import uuid
from typing import Any

from offsync_bench import fixture, loadgen, setup
from offsync_bench.browser_device import chromium, chromium_cpu_s, device_token, new_device
from offsync_bench.context import BenchContext
from offsync_bench.stats import summary_ms


def _http(ctx: BenchContext) -> str:
    return ctx.group.running["sync-service"].url


async def run_initial_sync(ctx: BenchContext) -> dict[str, Any]:
    await setup.bulk_published(ctx)
    device_id = f"bench-browser-{uuid.uuid4().hex[:8]}"
    async with chromium() as browser:
        dev = await new_device(browser, _http(ctx))
        token = device_token(ctx.jwt_secret, fixture.BULK_USER, device_id)
        await dev.open(ctx.sync_ws, token, device_id, "bench-initial")
        busy0, cpu0 = await dev.page_busy_s(), chromium_cpu_s()
        res = await dev.sync()
        busy, cpu = await dev.page_busy_s() - busy0, chromium_cpu_s() - cpu0
        await dev.close_db()
        # The same store opened again, as a reload of the app does (everything loaded to memory).
        reopened = await dev.open(ctx.sync_ws, token, device_id, "bench-initial")
    seconds = res["ms"] / 1000.0
    return {
        "records": res["records"],
        "seconds": round(seconds, 2),
        "records_per_s": round(res["records"] / seconds),
        "first_page_ms": round(res["first_page_ms"] or 0),
        "last_page_ms": round(res["last_page_ms"] or 0),
        "last_frame_ms": round(res["last_frame_ms"] or 0),
        "caught_up_ms": round(res["caught_up_ms"] or 0),
        "page_busy_ms": round(busy * 1000),
        "chromium_cpu_ms": round(cpu * 1000),
        "reopen_ms": round(reopened["open_ms"]),
        "reopened_records": reopened["records"],
        "expected_records": ctx.sizes.accounts,
    }


async def run_live(ctx: BenchContext) -> dict[str, Any]:
    await setup.side_published(ctx)
    n = ctx.sizes.live_changes
    user = fixture.side_user(0)
    device_id = f"bench-browser-live-{uuid.uuid4().hex[:8]}"
    latencies: list[float] = []
    arrivals: list[float] = []
    in_sdk: list[float] = []
    async with chromium() as browser, setup.records_client(ctx) as api:
        dev = await new_device(browser, _http(ctx))
        await dev.open(ctx.sync_ws, device_token(ctx.jwt_secret, user, device_id), device_id, "bench-live")
        await dev.sync()
        await dev.watch("account")
        for i in range(n):
            rid = fixture.side_account(0, i % ctx.sizes.upload_changes)
            r = await api.patch(f"/v1/records/account/{rid}", json={"attributes": {"name": f"browser live {i}"}})
            if r.status_code >= 300:
                raise RuntimeError(f"PATCH {rid} -> {r.status_code} {r.text[:200]}")
            body = r.json()
            seen, frame = await dev.seen_at(rid, int(body["version"]))
            committed = loadgen.epoch(body["modified_at"])
            latencies.append(seen - committed)
            arrivals.append(frame - committed)
            in_sdk.append(seen - frame)
    s = summary_ms(latencies)
    a = summary_ms(arrivals)
    k = summary_ms(in_sdk)
    return {
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "max_ms": s["max_ms"],
        "changes": s["samples"],
        "frame_p50_ms": a["p50_ms"],
        "frame_p99_ms": a["p99_ms"],
        "sdk_p50_ms": k["p50_ms"],
        "sdk_p99_ms": k["p99_ms"],
    }
