"""The device's sync client: one websocket session at a time against /v1/sync, driven by the
local store. `sync()` uploads pending changes then downloads until caught up; `run()` stays
connected for live ops and reconnects with jittered backoff. Every (re)connect flushes the
outbox on its own (failure mode 4) and resumes from the last checkpoint (failure mode 5).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import USER_AGENT
from websockets.uri import parse_uri

try:  # websockets >= 15 connects through the environment's proxy (HTTPS_PROXY, NO_PROXY ...)
    from websockets.proxy import get_proxy as _get_proxy
except ImportError:  # pragma: no cover - an older websockets: no proxy support to configure
    _get_proxy = None  # type: ignore[assignment]

from offsync_device import lean_socket
from offsync_device.background import next_sync_at
from offsync_device.backoff import Backoff, retry_after_from_reason
from offsync_device.lean_socket import LeanSocket
from offsync_device.local_store import LocalStore
from offsync_device.signin import SignInError, SignInRequired
from offsync_device.transport import tapped
from offsync_shared import protocol as p

log = logging.getLogger(__name__)

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
# The session's websocket: the lean client, or websockets' (a proxy, credentials in the URL).
Socket = LeanSocket | ClientConnection
ProgressCallback = Callable[[int, int], None]


class SyncRefused(Exception):
    """The server refused this device for good (until an admin changes something)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class SyncInterrupted(Exception):
    """The connection ended early; retrying (after a backoff) resumes from the checkpoint."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


CLIENT_NAME = "offsync-device-python/0.1.0"  # what the device list in the admin console shows
REFUSALS = {p.CLOSE_FORBIDDEN, p.CLOSE_NO_PROFILE, p.CLOSE_BAD_HELLO}
# Ops frames without a checkpoint (a download's pages) are held back and stored together, in one
# transaction, once this many ops are held, a checkpoint or any other frame comes, the
# connection ends, or no frame came for HOLD_IDLE_S: each commit rewrites (in the WAL) every
# b-tree page its ops touched, so a page of ops arriving in random key order cost about twice
# the CPU when committed alone (docs/performance.md, initial_sync). A crash loses at most the
# held ops, fetched again from the resume cursor of the last stored page.
HOLD_OPS = 10_000
HOLD_IDLE_S = 0.2


@dataclass
class SyncReport:
    ops: int = 0
    checkpoints: int = 0
    cursor: int = 0
    batches: int = 0  # batches answered (a second copy of an answer is not counted)
    problems: list[p.ChangeResult] = field(default_factory=list)
    errors: list[p.Error] = field(default_factory=list)
    refetched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    connections: int = 0
    seconds: float = 0.0


class Device:
    def __init__(
        self,
        url: str,
        store: LocalStore,
        token: TokenSource,
        *,
        device_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_ops: Callable[[list[p.OpRow]], None] | None = None,
        backoff: Backoff | None = None,
        token_in_header: bool = True,
        app: str | None = None,
    ) -> None:
        """``app``: the app module (id or name) this device syncs for; the server then checks that
        the user's profile is attached to it (close 4006 otherwise). None: no app check."""
        self.url = url
        self.app = app
        self.sync_intervals: dict[str, int] = {}  # entity -> minutes, from the last welcome
        self.last_sync: float | None = None  # wall-clock time of the last completed sync()
        self.store = store
        self._token = token
        self.device_id = device_id or store.device_id()
        self.on_progress = on_progress
        self.on_ops = on_ops
        self.backoff = backoff or Backoff()
        self.token_in_header = token_in_header
        self.max_changes = 500
        self.hold_ops = HOLD_OPS  # 0: every ops frame is stored as it arrives
        self._held: list[p.Ops] = []  # ops frames waiting to be stored together (HOLD_OPS)
        self._held_n = 0
        self._hold_timer: asyncio.TimerHandle | None = None
        # Held frames being written by the store's writer thread (store_soon), with the future
        # that ends it: every other store use of a session waits for it first (``_settle``).
        self._writing: tuple[Future[int], list[p.Ops]] | None = None
        # Ends the current session with a failure of the store from outside a frame's callback
        # (the idle timer storing held frames); None outside a session (the failure is raised).
        self._fail: Callable[[BaseException], None] | None = None
        self.inflight: str | None = None
        self.ws: Socket | None = None
        self._kick = asyncio.Event()
        # Sends the outbox while connected; started only when there is something to send.
        self._writer_task: asyncio.Task[None] | None = None
        store.on_local_change = self._local_change
        self.report = SyncReport()

    async def token(self) -> str:
        t = self._token
        if isinstance(t, str):
            return t
        v = t()
        if inspect.isawaitable(v):
            v = await v
        return v

    # ----------------------------------------------------------------------- public API ----
    async def sync(self, *, timeout: float = 120.0, max_attempts: int = 8) -> SyncReport:
        """Upload pending changes, then download until caught up (retrying with backoff)."""
        # A deadline on this task (no task of its own, as wait_for would make per sync).
        async with asyncio.timeout(timeout):
            report = await self._with_retries(until_synced=True, max_attempts=max_attempts)
        self.last_sync = time.time()
        return report

    async def run_background(self, stop: asyncio.Event) -> SyncReport:
        """Background / metered mode: no live connection; sync (upload, then catch up, then
        disconnect) as often as the profile's sync intervals ask — each entity at least every
        its item's ``sync_interval_minutes`` — until ``stop`` is set."""
        while not stop.is_set():
            await self.sync()
            delay = next_sync_at(self.last_sync, self.sync_intervals, time.time()) - time.time()
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
            except TimeoutError:
                pass
        return self.report

    async def run(self, stop: asyncio.Event) -> SyncReport:
        """Stay connected: live ops, outbox flushed as soon as edits happen or the link returns."""
        task = asyncio.create_task(self._with_retries(until_synced=False, max_attempts=None))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            if self.ws is not None:
                await self.ws.close()
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return self.report

    # ------------------------------------------------------------------------- sessions ----
    async def _with_retries(self, *, until_synced: bool, max_attempts: int | None) -> SyncReport:
        started = time.perf_counter()
        attempt = 0
        renewed = False
        while True:
            try:
                await self._session(until_synced)
                self.report.seconds = time.perf_counter() - started
                if until_synced:
                    return self.report
                attempt = 0
            except SyncRefused:
                raise
            except SyncInterrupted as exc:
                if exc.code == p.CLOSE_UNAUTHENTICATED and not renewed:
                    renewed = True  # renew the token and resume at once, from the checkpoint
                    expire = getattr(self._token, "expire", None)
                    if expire is not None:
                        expire()  # the server judged the token expired, whatever our clock says
                    continue
                renewed = False
                if max_attempts is not None and attempt + 1 >= max_attempts:
                    raise
                wait = self.backoff.delay(attempt, retry_after_from_reason(exc.reason))
                attempt += 1
                log.info("sync interrupted; retrying", extra={"code": exc.code, "reason": exc.reason, "wait": wait})
                await asyncio.sleep(wait)  # jittered backoff between reconnects (failure mode 6)

    async def _fresh_token(self) -> str:
        try:
            return await self.token()
        except SignInRequired:
            raise
        except SignInError as exc:  # the sign-in server is unreachable for now: like a lost link
            raise SyncInterrupted(None, str(exc)) from None

    async def _renewer(self, ws: Socket) -> None:
        """Renews the access token before it expires and hands it to the open session (an auth
        frame), so a long-lived connection is never closed for an expired token."""
        expires_at = getattr(self._token, "expires_at", None)
        margin = float(getattr(self._token, "margin_s", 60.0))
        if expires_at is None:
            return
        try:
            while True:
                at = expires_at()
                if at is None:
                    return
                await asyncio.sleep(max(at - margin - time.time(), 1.0))
                token = await self._fresh_token()
                await ws.send(p.encode(p.Auth(token=token)).decode())
        except (ConnectionClosed, SyncInterrupted, SignInError):
            pass  # the session ends (or renews on reconnect) on its own

    async def _session(self, until_synced: bool) -> None:
        token = await self._fresh_token()
        headers = {"Authorization": f"Bearer {token}"} if self.token_in_header else None
        hello = p.Hello(
            device_id=self.device_id,
            cursor=self.store.cursor,
            checksums=self.store.held_checksums(),
            token=None if self.token_in_header else token,
            features=(p.FEATURE_OPS_CHECKPOINT,),
            app=self.app,
            client=CLIENT_NAME,
            records=self.store.count(),
            pending=self.store.pending_count(),
        )
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()  # caught up (until_synced) or a bad frame
        caught_up = False
        ws: Socket | None = None

        def on_text(raw: bytes | bytearray | memoryview) -> None:
            # Runs in the socket's read callback: each frame is stored as it arrives, and nothing
            # may escape (the connection would die without a word).
            nonlocal caught_up
            if ended.done() or ws is None:
                return
            try:
                caught_up = self._on_frame(ws, p.decode_server(raw), caught_up)
                if until_synced and caught_up and self.inflight is None and not self.store.has_pending():
                    ended.set_result(None)
            except p.FrameError as exc:
                ended.set_exception(SyncInterrupted(None, f"bad frame from server: {exc.message}"))
            except Exception as exc:  # noqa: BLE001 - the store failed: end the session with it
                ended.set_exception(exc)

        try:
            options = _proxy_option(self.url)
            if lean_socket.supports(self.url, options.get("proxy")):
                ws = await lean_socket.connect(self.url, on_text, headers=headers, user_agent=USER_AGENT)
            else:
                ws = await connect(
                    self.url,
                    additional_headers=headers,
                    compression=None,
                    max_size=None,
                    open_timeout=10,
                    ping_interval=None,
                    create_connection=tapped(on_text),  # type: ignore[arg-type]
                    **options,
                )
        except (InvalidURI, ValueError) as exc:
            raise SyncRefused(0, describe_connect_failure(self.url, exc)) from None
        except InvalidStatus as exc:
            raise SyncRefused(0, describe_connect_failure(self.url, exc)) from None
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            raise SyncInterrupted(None, describe_connect_failure(self.url, exc)) from None
        self.ws = ws
        self.report.connections += 1
        self.inflight = None

        def fail(exc: BaseException) -> None:
            if not ended.done():
                ended.set_exception(exc)

        self._fail = fail
        renewer: asyncio.Task[None] | None = None
        try:
            await ws.send(p.encode(hello).decode())
            if self.store.has_pending():
                self._kick.set()  # reconnect alone flushes the outbox (failure mode 4)
                self._start_writer(ws)
            if getattr(self._token, "expires_at", None) is not None:
                renewer = asyncio.create_task(self._renewer(ws))
            # The socket's own future for the end of the connection (websockets': what
            # wait_closed awaits): waited on directly, no task around it, never cancelled here.
            closed = ws.lost if isinstance(ws, LeanSocket) else ws.connection_lost_waiter
            await asyncio.wait({ended, closed}, return_when=asyncio.FIRST_COMPLETED)
            if ended.done():
                ended.result()  # caught up: done; a bad frame or a store failure: raised
                return
        except ConnectionClosed:
            pass
        finally:
            self.ws = None  # before the close handshake: no writer starts for this socket now
            writer, self._writer_task = self._writer_task, None
            if writer is not None:
                writer.cancel()
            if renewer is not None:
                renewer.cancel()
            if not ended.done():
                ended.cancel()
            self._fail = None
            await ws.close()
            self._store_held()  # frames that arrived whole are kept, whatever ended the session
        code = ws.close_code
        reason = ws.close_reason or ""
        if code == p.CLOSE_REVOKED:
            # Signed out, device revoked or password changed: the sign-in is over, so renewing
            # or reconnecting cannot help; the user must sign in again.
            forget = getattr(self._token, "forget", None)
            if forget is not None:
                forget()
            raise SignInRequired(f"your sign-in has ended ({reason or 'revoked'}); sign in again")
        if code in REFUSALS:
            if code == p.CLOSE_NO_PROFILE:
                # The server took the profile away: drop server data, keep pending changes (failure mode 8).
                self.store.forget_all()
            raise SyncRefused(code, reason)
        raise SyncInterrupted(code, reason)

    def _local_change(self) -> None:
        """An offline edit (the store's ``on_local_change``): send it now if connected."""
        self._kick.set()
        if self.ws is not None:
            self._start_writer(self.ws)

    def _start_writer(self, ws: Socket) -> None:
        if self._writer_task is not None and not self._writer_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # an edit from another thread: the next session (or edit here) sends it
            return
        self._writer_task = loop.create_task(self._writer(ws))

    async def _writer(self, ws: Socket) -> None:
        """Sends the outbox, one batch at a time, whenever there is something and none in flight."""
        try:
            while True:
                await self._kick.wait()
                self._kick.clear()
                if self.inflight is None:
                    batch = self.store.next_batch(self.max_changes)
                    if batch is not None:
                        self.inflight = batch.batch_id
                        await ws.send(p.encode(batch).decode())
        except ConnectionClosed:
            pass  # the reader sees the close and decides what happens next

    def _send_soon(self, ws: Socket, frame: p.ClientFrame) -> None:
        """Send from a read callback (a refetch, a pong): queued as a task; a connection that
        closed meanwhile is the session's end, seen by the session itself."""
        task = asyncio.ensure_future(ws.send(p.encode(frame).decode()))
        task.add_done_callback(_ignore_closed)

    def _checkpointed(self, ws: Socket, cp: p.Checkpoint, bad: list[str]) -> bool:
        """After the store checked a checkpoint: caught up, or ask for the disagreeing buckets."""
        r = self.report
        if bad:
            r.refetched.extend(bad)
            self._send_soon(ws, p.Refetch(tuple(bad)))
            return False
        r.checkpoints += 1
        r.cursor = cp.cursor
        return True

    def _store_frames(self, frames: list[p.Ops], cp: p.Checkpoint | None) -> list[str]:
        """Stores ops frames (and verifies ``cp``) in one transaction; returns the disagreeing buckets."""
        self._settle()
        n, bad = self.store.apply_pages([(f.ops, f.resume) for f in frames], cp)
        self._stored(frames, n)
        return bad

    def _stored(self, frames: list[p.Ops], n: int) -> None:
        self.report.ops += n
        for f in frames:  # once the ops are stored
            if self.on_ops is not None:
                self.on_ops(f.ops)
            if self.on_progress is not None:
                self.on_progress(f.done, f.total)

    def _store_soon(self, frames: list[p.Ops]) -> None:
        """Held frames (no checkpoint among them) go to the store's writer thread: the socket's
        next frames are parsed while SQLite writes these (initial_sync, docs/performance.md)."""
        self._settle()
        future = self.store.store_soon([(f.ops, f.resume) for f in frames])
        if future.done():  # a store in memory writes at once
            self._stored(frames, future.result())
            return
        job = (future, frames)
        self._writing = job
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._settle_job, job))

    def _settle_job(self, job: tuple[Future[int], list[p.Ops]]) -> None:
        """The writer finished ``job``: report it, unless a store use has settled it already."""
        if self._writing is job:
            self._outside_a_frame(self._settle)

    def _outside_a_frame(self, store: Callable[[], None]) -> None:
        """A store use from a timer or the writer's callback: its failure ends the session
        (``_fail``), or is raised outside one."""
        try:
            store()
        except Exception as exc:
            if self._fail is None:
                raise
            self._fail(exc)

    def _settle(self) -> None:
        """Waits for the frames on the writer thread (if any), reports them, raises its failure."""
        job, self._writing = self._writing, None
        if job is not None:
            self._stored(job[1], job[0].result())

    def _hold(self, frame: p.Ops) -> None:
        self._held.append(frame)
        self._held_n += len(frame.ops)
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = asyncio.get_running_loop().call_later(HOLD_IDLE_S, self._held_idle)

    def _take_held(self) -> list[p.Ops]:
        held, self._held, self._held_n = self._held, [], 0
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        return held

    def _store_held(self) -> None:
        """Stores the held frames now, after whatever the writer thread has (every other frame
        and the session's end come after the ops before them)."""
        if self._held:
            self._store_frames(self._take_held(), None)
        else:
            self._settle()

    def _held_idle(self) -> None:
        """No frame for HOLD_IDLE_S: the held frames are stored now."""
        self._hold_timer = None
        self._outside_a_frame(self._store_held)

    def _on_frame(self, ws: Socket, frame: p.ServerFrame, caught_up: bool) -> bool:
        """One frame from the server, handled as it is read; returns whether the device is caught up."""
        r = self.report
        if isinstance(frame, p.Ops):
            # FEATURE_OPS_CHECKPOINT: a checkpoint riding along is verified in the ops' transaction.
            cp = frame.checkpoint
            if cp is None and self._held_n + len(frame.ops) < self.hold_ops:
                self._hold(frame)
                return False
            if cp is None:
                self._store_soon([*self._take_held(), frame])
                return False
            bad = self._store_frames([*self._take_held(), frame], cp)
            return self._checkpointed(ws, cp, bad)
        self._store_held()  # every other frame comes after the ops before it
        if isinstance(frame, p.Checkpoint):
            return self._checkpointed(ws, frame, self.store.checkpoint(frame.cursor, frame.checksums))
        if isinstance(frame, p.Result):
            if self.store.awaits_answer(frame.batch_id):  # a second copy of an answer is not counted
                r.problems.extend(self.store.apply_result(frame))
                r.batches += 1
            if frame.batch_id == self.inflight:
                self.inflight = None
            self._kick.set()
            return caught_up
        if isinstance(frame, p.Welcome):
            self.max_changes = int(frame.limits.get("max_changes", self.max_changes))
            self.sync_intervals = dict(frame.sync_intervals)
            self.store.hold_buckets(frame.buckets)
            return False
        if isinstance(frame, p.Drop):
            self.store.drop_buckets(frame.buckets)
            r.dropped.extend(frame.buckets)
            return caught_up
        if isinstance(frame, p.Reset):
            self.store.reset_buckets(frame.buckets)
            return False
        if isinstance(frame, p.Ping):
            self._send_soon(ws, p.Pong(t=frame.t))
            return caught_up
        if isinstance(frame, p.Error):
            r.errors.append(frame)
            # A retriable refusal of our batch (or an unattributed rate limit, which may have
            # swallowed it): keep the batch and resend it, same id, after retry_after.
            if (
                self.inflight is not None
                and frame.code in (p.ERR_UNAVAILABLE, p.ERR_RATE_LIMITED)
                and frame.ref in (None, self.inflight)
            ):
                # Keep the batch (same id) and resend it shortly.
                self.inflight = None
                asyncio.get_running_loop().call_later(frame.retry_after or 1.0, self._kick.set)
            return caught_up
        return caught_up


def describe_connect_failure(url: str, exc: BaseException) -> str:
    """One sentence a person can act on for a websocket connection that could not be opened."""
    parts = urlsplit(url)
    where = parts.netloc or url
    if parts.scheme in ("http", "https"):
        return f"{url} is a web address; the device connects to the websocket, like ws://{where}/v1/sync"
    if isinstance(exc, (InvalidURI, ValueError)) or parts.scheme not in ("ws", "wss"):
        return f"{url} is not a websocket address like ws://host:8300/v1/sync"
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403, 404):
            return (
                f"{where} has no Offsync device endpoint at {parts.path or '/'}: check the path (/v1/sync) and the port"
            )
        return f"{where} answered {status} instead of accepting the device: check the address and the port"
    if isinstance(exc, InvalidHandshake):
        return f"{where} does not speak the Offsync device protocol: check the address and the port"
    text = str(exc).lower()
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return f"cannot find the server {parts.hostname}: check the address"
    if isinstance(exc, TimeoutError):
        return f"the server at {where} did not answer in time"
    return f"nothing answers at {where}: the server is down, or the port is wrong"


@functools.lru_cache(maxsize=32)
def _proxy_option(url: str) -> dict[str, Any]:
    """The proxy websockets would use for ``url``, looked up once per URL and process: left to
    websockets, the environment is scanned on every connect (~60 µs of a ~1 ms reconnect).
    An invalid URL gets no option (``connect`` then refuses it with its own error)."""
    if _get_proxy is None:
        return {}
    try:
        return {"proxy": _get_proxy(parse_uri(url))}
    except (InvalidURI, ValueError):
        return {}


def _ignore_closed(task: asyncio.Future[None]) -> None:
    exc = None if task.cancelled() else task.exception()
    if exc is not None and not isinstance(exc, ConnectionClosed):
        log.warning("send failed", exc_info=exc)


__all__ = ["Device", "SyncInterrupted", "SyncRefused", "SyncReport", "websockets"]
