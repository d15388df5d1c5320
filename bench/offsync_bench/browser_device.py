"""A device in headless Chromium for the browser workloads: a page on sync-service's origin that
imports the TypeScript SDK bundle the field app uses (/app/offsync.js), with an IndexedDB store.
Playwright's async API drives the system's Chromium (offsync_stack.browser)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import psutil

from offsync_shared.auth import DEVICE_AUDIENCE, issue_token
from offsync_stack.browser import CHROMIUM_FLAGS, chromium_path

# Opens the SDK on an IndexedDB database and keeps, per record, when a watch first showed each of
# its versions (window.seen), so the workloads can time a change to its visibility in db.watch.
# The socket it hands the SDK notes when each frame reached the page (window.frameAt, before the
# SDK's own handler runs), to tell the SDK's share of a latency from the server's and the network's.
_OPEN = """
async ([url, token, deviceId, name]) => {
  const O = await import('/app/offsync.js');
  window.frameAt = null;
  window.lastFrameAt = null;
  class TimedSocket extends WebSocket {
    constructor(u) {
      super(u);
      this.addEventListener('message', () => {
        window.frameAt = performance.timeOrigin + performance.now();
        window.lastFrameAt = window.frameAt;
      });
    }
  }
  const t0 = performance.now();
  const db = await O.Offsync.open({
    url, store: new O.IndexedDBStore(name), auth: O.staticToken(token), deviceId, WebSocket: TimedSocket,
  });
  window.db = db;
  window.seen = new Map();
  window.waits = new Map();
  return {open_ms: performance.now() - t0, records: db.replica.count()};
}
"""

# Also when the first and the last page were applied, when the last frame reached the page, and
# when the device was caught up in memory: synced() resolves once the store holds the checkpoint,
# so the rest of `ms` is IndexedDB catching up.
_SYNC = """
async () => {
  const t0 = performance.now();
  const origin = performance.timeOrigin + t0;
  let first = null, last = null, caughtUp = null;
  const off = window.db.onStatus((s) => {
    const t = performance.now() - t0;
    if (s.downloading) { first ??= t; last = t; }
    if (s.caughtUp && caughtUp === null) caughtUp = t;
  });
  window.db.start();
  await window.db.synced();
  const ms = performance.now() - t0;
  off();
  return {
    ms, first_page_ms: first, last_page_ms: last, caught_up_ms: caughtUp,
    last_frame_ms: window.lastFrameAt === null ? null : window.lastFrameAt - origin,
    records: window.db.replica.count(),
  };
}
"""

_WATCH = """
(entity) => {
  window.db.watch(entity, {}, (rows) => {
    const now = performance.timeOrigin + performance.now();
    for (const r of rows) {
      const s = window.seen.get(r.id);
      if (!s || s.version !== r.version) window.seen.set(r.id, {version: r.version, t: now, frame: window.frameAt});
      const w = window.waits.get(r.id);
      if (w && r.version >= w.version) { window.waits.delete(r.id); w.resolve([now, window.frameAt]); }
    }
  });
}
"""

# Epoch milliseconds when a watch first showed the record at `version` or later, and when the
# frame it was applied from reached the page (the last frame before the watch ran).
_WAIT_FOR = """
([id, version]) => new Promise((resolve) => {
  const s = window.seen.get(id);
  if (s && s.version >= version) return resolve([s.t, s.frame]);
  window.waits.set(id, {version, resolve});
})
"""


class BrowserDevice:
    def __init__(self, page: Any) -> None:
        self.page = page
        self._cdp: Any = None

    async def open(self, ws_url: str, token: str, device_id: str, db_name: str) -> dict[str, Any]:
        return await self.page.evaluate(_OPEN, [ws_url, token, device_id, db_name])

    async def sync(self) -> dict[str, Any]:
        return await self.page.evaluate(_SYNC)

    async def watch(self, entity: str) -> None:
        await self.page.evaluate(_WATCH, entity)

    async def seen_at(self, record_id: str, version: int, timeout: float = 10.0) -> tuple[float, float]:
        """Epoch seconds when db.watch first showed this version of the record, and when the frame
        that carried it reached the page."""
        try:
            t, frame = await asyncio.wait_for(self.page.evaluate(_WAIT_FOR, [record_id, version]), timeout)
        except TimeoutError:
            raise RuntimeError(f"{record_id} v{version} not visible through db.watch within {timeout} s") from None
        return float(t) / 1000.0, float(frame if frame is not None else t) / 1000.0

    async def page_busy_s(self) -> float:
        """Seconds the page's main thread has spent running tasks so far (CDP Performance
        metrics; wall time inside tasks, so a starved CPU inflates it too)."""
        if self._cdp is None:
            self._cdp = await self.page.context.new_cdp_session(self.page)
            await self._cdp.send("Performance.enable")
        metrics = (await self._cdp.send("Performance.getMetrics"))["metrics"]
        return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))

    async def close_db(self) -> None:
        await self.page.evaluate("() => window.db.close()")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium (Playwright async API) for a workload."""
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no Chromium on this machine: `apt-get install chromium` (make browser-deps)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_device(browser: Any, http_url: str) -> BrowserDevice:
    """A fresh context and page on sync-service's origin (so /app/offsync.js and IndexedDB are there)."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{http_url}/app/config.json")
    return BrowserDevice(page)


def chromium_cpu_s() -> float:
    """CPU seconds (user + system) used so far by every Chromium process this process started
    (renderer, browser, network and storage services): what the browser costs, which on a shared
    machine is steadier than wall time."""
    total = 0.0
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "chrom" not in proc.name():
                continue
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue  # exited meanwhile
    return total


def device_token(secret: str, user_id: str, device_id: str) -> str:
    return issue_token(secret, user_id, DEVICE_AUDIENCE, ttl_seconds=4 * 3600, device_id=device_id)
