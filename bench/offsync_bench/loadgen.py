"""Load generators: record writes through the records API (conflict-service), from a process of
their own so the client side never shares an event loop with what it measures. Each returns
what it did with the server's own commit timestamps (``modified_at`` of the written row)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

Change = tuple[str, str, dict[str, Any]]  # entity, id, attributes to set


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def run_in_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs ``fn(*args)`` (a module-level function) in a fresh spawned process."""
    from offsync_bench.fleet import own_session

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"), initializer=own_session) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def patch_paced(url: str, token: str, changes: list[Change], rate: float, concurrency: int = 16) -> dict[str, Any]:
    """PATCHes ``changes`` at ``rate`` per second (open loop: each is due at start + i/rate, so a
    slow server does not slow the offered load down, it shows up as lag). Returns
    [(entity, id, version, modified_at epoch)] and the achieved rate."""
    return asyncio.run(_patch_paced(url, token, changes, rate, concurrency))


async def _patch_paced(url: str, token: str, changes: list[Change], rate: float, concurrency: int) -> dict[str, Any]:
    import httpx

    done: list[tuple[str, str, int, float]] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:

        async def send(_i: int, ch: Change) -> None:
            entity, rid, attrs = ch
            r = await client.patch(f"/v1/records/{entity}/{rid}", json={"attributes": attrs})
            if r.status_code >= 300:
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            body = r.json()
            done.append((entity, rid, int(body["version"]), epoch(body["modified_at"])))

        elapsed = await _paced(changes, 1 / rate, send, concurrency)
    return {
        "done": done,
        "errors": errors[:5],
        "error_count": len(errors),
        "seconds": elapsed,
        "achieved_rate": len(done) / elapsed if elapsed > 0 else 0.0,
    }


def chunks_per_tick(items: list[Any], rate: float, tick: float) -> list[list[Any]]:
    """``items`` split into the groups an open-loop writer sends every ``tick`` s to offer
    ``rate`` items/s: ``rate * tick`` each (at least one)."""
    per_tick = max(1, int(round(rate * tick)))
    return [items[k : k + per_tick] for k in range(0, len(items), per_tick)]


async def _paced(
    chunks: list[Any], tick: float, send: Callable[[int, Any], Awaitable[None]], concurrency: int
) -> float:
    """Sends chunk i at start + i * tick (open loop: a slow server shows up as lag, it does not
    slow the offered load) with at most ``concurrency`` requests in flight; returns the seconds
    from the first send to the last answer."""
    sem = asyncio.Semaphore(concurrency)
    start = time.monotonic()

    async def one(i: int, chunk: Any) -> None:
        delay = start + i * tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load, not waiting for a condition
        async with sem:
            await send(i, chunk)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
    return time.monotonic() - start


def batch_paced(
    url: str, token: str, changes: list[Change], rate: float, tick: float = 0.05, concurrency: int = 8
) -> dict[str, Any]:
    """Updates ``changes`` through the records API's batch endpoint, the ``rate * tick`` changes
    due in each ``tick`` in one request (one transaction) per entity. Returns
    [(entity, id, version, modified_at epoch)]: each change's own version and the server's commit
    timestamp of its batch, and the achieved rate."""
    return asyncio.run(_batch_paced(url, token, changes, rate, tick, concurrency))


async def _batch_paced(
    url: str, token: str, changes: list[Change], rate: float, tick: float, concurrency: int
) -> dict[str, Any]:
    import httpx

    done: list[tuple[str, str, int, float]] = []
    errors: list[str] = []
    requests = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:

        async def send(_i: int, chunk: list[Change]) -> None:
            nonlocal requests
            by_entity: dict[str, list[Change]] = {}
            for ch in chunk:
                by_entity.setdefault(ch[0], []).append(ch)
            for entity, part in by_entity.items():
                body = {"changes": [{"op": "update", "id": rid, "attributes": attrs} for _e, rid, attrs in part]}
                r = await client.post(f"/v1/records/{entity}/batch", json=body)
                requests += 1
                if r.status_code >= 300:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    continue
                out = r.json()
                at = epoch(out["modified_at"])
                done.extend((entity, item["id"], int(item["version"]), at) for item in out["items"])

        elapsed = await _paced(chunks_per_tick(changes, rate, tick), tick, send, concurrency)
    return {
        "done": done,
        "errors": errors[:5],
        "error_count": len(errors),
        "seconds": elapsed,
        "requests": requests,
        "achieved_rate": len(done) / elapsed if elapsed > 0 else 0.0,
    }


def import_paced(
    url: str, token: str, entity: str, lines: list[dict[str, Any]], rate: float, tick: float = 0.1
) -> dict[str, Any]:
    """Sends ``lines`` through the NDJSON bulk import, ``rate * tick`` lines every ``tick`` s
    (open loop). Returns the achieved rate; commit times are read from data.records after."""
    return asyncio.run(_import_paced(url, token, entity, lines, rate, tick))


async def _import_paced(
    url: str, token: str, entity: str, lines: list[dict[str, Any]], rate: float, tick: float
) -> dict[str, Any]:
    import httpx
    import orjson

    errors: list[str] = []
    sent = 0
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}, timeout=60
    ) as client:

        async def send(_i: int, chunk: list[dict[str, Any]]) -> None:
            nonlocal sent
            body = b"\n".join(orjson.dumps(x) for x in chunk)
            r = await client.post(f"/v1/records/{entity}/import", content=body)
            if r.status_code >= 300:
                errors.append(f"{r.status_code} {r.text[:200]}")
            else:
                sent += len(chunk)

        chunks = chunks_per_tick(lines, rate, tick)
        elapsed = await _paced(chunks, tick, send, len(chunks))
    return {
        "sent": sent,
        "errors": errors[:5],
        "error_count": len(errors),
        "seconds": elapsed,
        "achieved_rate": sent / elapsed if elapsed > 0 else 0.0,
    }
