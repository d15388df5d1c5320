"""Load generators: record writes through the records API (conflict-service), from a process of
their own so the client side never shares an event loop with what it measures. Each returns
what it did with the server's own commit timestamps (``modified_at`` of the written row)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any, Callable

import multiprocessing as mp

Change = tuple[str, str, dict[str, Any]]  # entity, id, attributes to set


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def run_in_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs ``fn(*args)`` (a module-level function) in a fresh spawned process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
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
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits) as client:
        start = time.monotonic()

        async def one(i: int, ch: Change) -> None:
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the offered load, not waiting for a condition
            async with sem:
                entity, rid, attrs = ch
                r = await client.patch(f"/v1/records/{entity}/{rid}", json={"attributes": attrs})
            if r.status_code >= 300:
                errors.append(f"{r.status_code} {r.text[:200]}")
                return
            body = r.json()
            done.append((entity, rid, int(body["version"]), epoch(body["modified_at"])))

        await asyncio.gather(*(one(i, ch) for i, ch in enumerate(changes)))
        elapsed = time.monotonic() - start
    return {"done": done, "errors": errors[:5], "error_count": len(errors), "seconds": elapsed,
            "achieved_rate": len(done) / elapsed if elapsed > 0 else 0.0}


def import_paced(url: str, token: str, entity: str, lines: list[dict[str, Any]], rate: float, tick: float = 0.1) -> dict[str, Any]:
    """Sends ``lines`` through the NDJSON bulk import, ``rate * tick`` lines every ``tick`` s
    (open loop). Returns the achieved rate; commit times are read from data.records after."""
    return asyncio.run(_import_paced(url, token, entity, lines, rate, tick))


async def _import_paced(url: str, token: str, entity: str, lines: list[dict[str, Any]], rate: float, tick: float) -> dict[str, Any]:
    import httpx
    import orjson

    per_tick = max(1, int(round(rate * tick)))
    chunks = [lines[k:k + per_tick] for k in range(0, len(lines), per_tick)]
    errors: list[str] = []
    sent = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}",
                                                        "Content-Type": "application/x-ndjson"}, timeout=60) as client:
        start = time.monotonic()

        async def one(i: int, chunk: list[dict[str, Any]]) -> None:
            nonlocal sent
            delay = start + i * tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the offered load
            body = b"\n".join(orjson.dumps(x) for x in chunk)
            r = await client.post(f"/v1/records/{entity}/import", content=body)
            if r.status_code >= 300:
                errors.append(f"{r.status_code} {r.text[:200]}")
            else:
                sent += len(chunk)

        await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
        elapsed = time.monotonic() - start
    return {"sent": sent, "errors": errors[:5], "error_count": len(errors), "seconds": elapsed,
            "achieved_rate": sent / elapsed if elapsed > 0 else 0.0}
