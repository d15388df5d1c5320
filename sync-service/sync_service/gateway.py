"""The `/v1/sync` websocket endpoint: admits (connection-rate cap, drain), authenticates the
device, then only moves bytes between the socket and its SyncSession and closes with the code
the session or the admission decided. All protocol behaviour lives in session.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from starlette.types import Scope
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from offsync_shared import auth, heap, metrics
from offsync_shared import protocol as p
from offsync_shared.errors import OffsyncError, Unauthenticated
from sync_service.bucket_reads import BucketStore
from sync_service.device_access import app_refusal, decide, device_mismatch
from sync_service.devices import DeviceRegistry
from sync_service.hub import Hub
from sync_service.limits import ComeBackSlots, TokenBucket
from sync_service.session import BatchPublisher, Close, Encoded, Phase, SyncSession
from sync_service.settings import Settings
from sync_service.token_check import TokenChecker
from sync_service.ws_frames import text_frame
from sync_service.ws_transport import LEAN_EXTENSION, LeanWebSocketProtocol

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0  # a device that stops reading for this long is cut off, not buffered for


class Gateway:
    def __init__(
        self,
        settings: Settings,
        store: BucketStore,
        hub: Hub,
        publisher: BatchPublisher,
        clock: Callable[[], float] = time.monotonic,
        devices: DeviceRegistry | None = None,
    ) -> None:
        self.s = settings
        self.devices = devices or DeviceRegistry(None)
        self.store = store
        self.hub = hub
        self.publisher = publisher
        self.clock = clock
        self.conn_limiter = TokenBucket(settings.sync_conn_rate, settings.sync_conn_burst, updated=clock())
        self.tokens = TokenChecker(settings.jwt_secret, auth.DEVICE_AUDIENCE, issuer=settings.jwt_issuer)
        self._verify = self.verify  # one bound method for every session, not one each (64 B)
        self.come_back = ComeBackSlots(settings.sync_conn_rate)
        self.sessions: set[SyncSession] = set()
        self.connections = 0
        self.opened = 0  # connections accepted since start (trim_after_bursts)
        self.draining = False
        self.refused: dict[int, int] = {}

    async def trim_after_bursts(self, every_s: float = 0.5, burst: int = 200) -> None:
        """Once a burst of connections is over (``burst`` or more since the last trim, none in the
        last ``every_s``), hands the freed heap back to the OS: the handshakes' and first
        downloads' buffers of a storm would otherwise stay as RSS for the life of the process."""
        trimmed = seen = self.opened
        while True:
            await asyncio.sleep(every_s)  # a period, not a wait for a condition
            now = self.opened
            if now - trimmed >= burst and now == seen:
                heap.trim()
                trimmed = now
            seen = now

    def verify(self, token: str) -> auth.Principal:
        return self.tokens.verify(token)

    def begin_drain(self) -> None:
        """SIGTERM: refuse new devices; sessions finish awaited batch answers, then close 1001."""
        self.draining = True
        for s in list(self.sessions):
            s.begin_drain()

    async def drained(self, timeout: float) -> bool:
        deadline = self.clock() + timeout
        while self.connections and self.clock() < deadline:
            await asyncio.sleep(0.05)  # shutdown path only: polls a counter, bounded by timeout
        return self.connections == 0

    def _count_close(self, code: int) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1
        metrics.SYNC_CLOSES.labels(str(code)).inc()

    async def _close(self, ws: WebSocket, code: int, reason: str) -> None:
        self._count_close(code)
        with contextlib.suppress(Exception):
            if ws.application_state != WebSocketState.DISCONNECTED:
                await ws.close(code, reason[:120])

    async def handle(self, ws: WebSocket) -> None:
        await ws.accept()
        self.opened += 1
        self.connections += 1
        metrics.CONNECTED_DEVICES.inc()
        kept = False
        try:
            # Admission in its own frame: what it held (the hello text, the token) is not kept
            # for the life of the connection by this long-lived one.
            session = await self._admit(ws)
            if session is not None:
                kept = await self._run(ws, session)
        finally:
            if not kept:
                self._ended()

    def _ended(self) -> None:
        self.connections -= 1
        metrics.CONNECTED_DEVICES.dec()

    async def _admit(self, ws: WebSocket) -> SyncSession | None:
        """Rate cap, hello, token, user: a session for the device, or None (socket closed)."""
        if self.draining:
            await self._close(ws, p.CLOSE_GOING_AWAY, "going_away: server draining; connect elsewhere")
            return None
        now = self.clock()
        if not self.conn_limiter.take(now):
            wait = self.come_back.wait(now, max(self.conn_limiter.retry_after(), 0.05))
            await self._close(
                ws, p.CLOSE_TRY_AGAIN_LATER, f"try_again_later: connection rate cap; retry_after={wait:.3f}"
            )
            return None
        try:
            async with asyncio.timeout(self.s.sync_hello_timeout_s):  # no task of its own, as wait_for's
                msg = await ws.receive()
        except TimeoutError:
            await self._close(ws, p.CLOSE_TIMEOUT, "timeout: no hello")
            return None
        if msg["type"] == "websocket.disconnect":
            return None
        raw = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
        try:
            if raw is None or len(raw) > self.s.sync_preauth_frame_bytes:
                raise p.FrameError(p.ERR_FRAME_TOO_LARGE, "hello too large")
            hello = p.decode_client(raw)
            if not isinstance(hello, p.Hello):
                raise p.FrameError(p.ERR_BAD_FRAME, "the first frame must be hello")
        except p.FrameError as exc:
            await self._close(ws, p.CLOSE_BAD_HELLO, f"bad_hello: {exc.message}")
            return None
        try:
            header = _authorization(ws.scope)
            # The upgrade headers (the bearer token among them) are not needed again.
            ws.scope["headers"] = ()
            token = auth.bearer(header) if header else hello.token
            if not token:
                raise Unauthenticated("missing bearer token (Authorization header or hello.token)")
            principal = self.verify(token)
        except OffsyncError as exc:
            # The reason, never the token: enough to tell an expired token from a forged one.
            log.warning("device authentication failed", extra={"device_id": hello.device_id, "reason": exc.message})
            await self._close(ws, p.CLOSE_UNAUTHENTICATED, f"unauthenticated: {exc.message}")
            return None
        lean = ws.scope.get("extensions", {}).get(LEAN_EXTENSION)
        if lean is not None:  # now (before any await) frames may be as large as the session allows
            lean.authenticated(self.s.sync_hard_frame_bytes)
        refusal = device_mismatch(principal.device_id, hello.device_id)
        admission = None
        if refusal is None:
            admission = await self.store.admit(principal.user_id, principal.session_id)
            refusal = decide(admission.facts, principal.generation)
            if refusal is None and hello.app is not None:
                profiles = await self.store.app_profiles(hello.app)
                refusal = app_refusal(hello.app, profiles, admission.facts.profile_id)
        if refusal is not None:
            log.info(
                "device refused",
                extra={"user_id": principal.user_id, "device_id": hello.device_id, "reason": refusal.reason},
            )
            self.devices.refused(principal.user_id, hello.device_id, refusal.reason)
            await self._close(ws, refusal.close_code, refusal.reason)
            return None
        assert admission is not None
        log.info("device connected", extra={"user_id": principal.user_id, "device_id": hello.device_id})
        self.devices.connected(
            principal.user_id,
            hello.device_id,
            client=hello.client,
            records=hello.records,
            pending=hello.pending,
            profile_id=admission.facts.profile_id,
            profile_version=admission.facts.profile_version,
        )
        return SyncSession(
            principal=principal,
            hello=hello,
            store=self.store,
            registry=self.hub,
            shared=self.hub.fanout,
            publisher=self.publisher,
            settings=self.s,
            verify_token=self._verify,
            admission=admission,
        )

    async def _run(self, ws: WebSocket, session: SyncSession) -> bool:
        """Moves frames between the socket and the session until either ends. True when the
        connection outlives this call: on the lean transport an idle session is parked, with no
        task, and each later turn runs in a task of its own (``_turns``)."""
        self.sessions.add(session)
        if self.draining:  # SIGTERM arrived while this device was being admitted
            session.begin_drain()
        lean = ws.scope.get("extensions", {}).get(LEAN_EXTENSION)
        if lean is None:
            await self._run_with_task(ws, session)
            return False
        link = _Link(self, session, lean)
        session.direct = link.write_direct
        # Frames reach the session from the transport's read callback.
        session.on_room = lean.resume_feed
        lean.attach(session)
        _forget_scope(ws.scope)
        lean.keep()
        await self._turns(link)
        return True

    async def _turns(self, link: _Link) -> None:
        """Runs the session's turns, sending what they yield, until it is idle (then parks it:
        the next wake-up starts this again in a new task) or over (then ends the connection)."""
        session, lean = link.session, link.lean
        session.unpark()
        parked = False
        try:
            while True:
                async with contextlib.aclosing(session.turn()) as turn:
                    async for out in turn:
                        if isinstance(out, Close):
                            if out.code not in (p.CLOSE_GOING_AWAY,):
                                session.last_error = out.reason[:300]
                            self._count_close(out.code)
                            if link.held is not None:
                                await link.flush()
                            await lean.close(out.code, out.reason[:120])
                            break
                        data = out.text if isinstance(out, Encoded) else p.encode(out)
                        del out  # not kept alive by this frame while the send below waits
                        if session.phase is Phase.OPENING:
                            # Welcome (and metadata, drop, reset): written with the first frame
                            # after them, one write instead of two (docs/performance.md, reconnect).
                            link.hold(data)
                        elif link.held is not None:
                            await link.flush(data)
                        else:
                            async with asyncio.timeout(SEND_TIMEOUT_S):
                                await lean.send_text(data)
                        del data
                if session.over:
                    break
                # Waiting for the shared read: its frames take what is held (``write_direct``).
                if link.held is not None and session.phase is not Phase.ENROLLED:
                    await link.flush()
                if session.park(link):
                    parked = True
                    return
        except (TimeoutError, OSError, RuntimeError) as exc:
            log.info(
                "device connection ended",
                extra={"user_id": session.user_id, "device_id": session.device_id, "reason": repr(exc)},
            )
        except Exception:
            log.exception("session failed", extra={"user_id": session.user_id, "device_id": session.device_id})
            session.last_error = "internal: the session failed on the server"
            self._count_close(p.CLOSE_INTERNAL)
            with contextlib.suppress(Exception):
                await lean.close(p.CLOSE_INTERNAL, "internal: see server logs; reconnect and resume")
        finally:
            if not parked:
                await self._end(session, lean)

    async def _end(self, session: SyncSession, lean: LeanWebSocketProtocol) -> None:
        try:
            self._retire(session)
            with contextlib.suppress(Exception):
                await session.forward_unread_uploads()
        finally:
            self._release(lean)

    def _end_parked(self, link: _Link) -> None:
        """``_end`` of a parked session whose device left with nothing to forward: no task and
        no turn needed (one per disconnect, so one per reconnect of a storm)."""
        try:
            self._retire(link.session)
        finally:
            self._release(link.lean)

    def _retire(self, session: SyncSession) -> None:
        session.end()
        session.direct = None  # the link's bound method: no cycle left to the collector
        self.sessions.discard(session)
        self.devices.disconnected(session)
        log.info("device disconnected", extra={"user_id": session.user_id, "device_id": session.device_id})

    def _release(self, lean: LeanWebSocketProtocol) -> None:
        lean.detach()
        lean.finish()
        self._ended()

    async def _run_with_task(self, ws: WebSocket, session: SyncSession) -> None:
        """Any other ASGI server: a reader task and this task for the life of the connection."""
        reader = asyncio.create_task(self._read(ws, session))
        stream = session.run()
        try:
            async for out in stream:
                if isinstance(out, Close):
                    if out.code not in (p.CLOSE_GOING_AWAY,):
                        session.last_error = out.reason[:300]
                    await self._close(ws, out.code, out.reason)
                    break
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await ws.send_text(out.text if isinstance(out, Encoded) else p.encode(out).decode())
                del out
        except (TimeoutError, WebSocketDisconnect, OSError, RuntimeError) as exc:
            log.info(
                "device connection ended",
                extra={"user_id": session.user_id, "device_id": session.device_id, "reason": repr(exc)},
            )
        except Exception:
            log.exception("session failed", extra={"user_id": session.user_id, "device_id": session.device_id})
            session.last_error = "internal: the session failed on the server"
            await self._close(ws, p.CLOSE_INTERNAL, "internal: see server logs; reconnect and resume")
        finally:
            await stream.aclose()
            self.sessions.discard(session)
            self.devices.disconnected(session)
            log.info("device disconnected", extra={"user_id": session.user_id, "device_id": session.device_id})
            # Let the reader take what the device sent before leaving (up to the disconnect).
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(reader), 2.0)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await session.forward_unread_uploads()

    async def _read(self, ws: WebSocket, session: SyncSession) -> None:
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                raw = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
                if raw is not None:
                    await session.receive(raw)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            session.disconnected()


class _Link:
    """A parked session's way back: what its wake-up runs the next turns with, and the frames
    of its opening not written yet (``held``)."""

    __slots__ = ("gateway", "session", "lean", "held")

    def __init__(self, gateway: Gateway, session: SyncSession, lean: LeanWebSocketProtocol) -> None:
        self.gateway, self.session, self.lean = gateway, session, lean
        # Encoded frames that go out before anything else, with the next write: the welcome of
        # a reconnecting device waits for the shared read's ops, so both leave in one write.
        self.held: list[str | bytes] | None = None

    def __call__(self) -> None:
        """The wake-up (called as the parked callback itself: no bound method kept per park)."""
        if self.session.leaves_quietly():
            # Soon, not now: this runs inside the transport's read callback, which still has
            # the close handshake to answer before the connection may be closed.
            asyncio.get_running_loop().call_soon(self.gateway._end_parked, self)
            return
        self.lean.spawn(self.gateway._turns(self))

    def hold(self, data: str | bytes) -> None:
        if self.held is None:
            self.held = []
        self.held.append(data)

    async def flush(self, then: str | bytes | None = None) -> None:
        """Writes what is held (and ``then``) in one write; as separate sends when the socket
        cannot take it now (they wait for room, or fail as the connection's state says)."""
        held, self.held = self.held or [], None
        if then is not None:
            held.append(then)
        if not held or self.lean.write_prebuilt(_framed(held)):
            return
        self.held = []  # until they are sent, nothing may overtake them (``write_direct``)
        try:
            for t in held:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.lean.send_text(t)
        finally:
            self.held = None

    def write_direct(self, wire: bytes) -> bool:
        """``SyncSession.direct``: prebuilt frames straight to the socket, after what is held."""
        held = self.held
        if held is None:
            return self.lean.write_prebuilt(wire)
        if not held or not self.lean.write_prebuilt(_framed(held) + wire):
            return False  # a flush is under way, or no room: the session's turn sends them
        self.held = None
        return True


def _framed(texts: list[str | bytes]) -> bytes:
    """Encoded frames as one run of websocket text frames (one write)."""
    return b"".join(text_frame(t if isinstance(t, bytes) else t.encode()) for t in texts)


def _forget_scope(scope: Scope) -> None:
    """Empties the connection's ASGI scope (client and server addresses, state and extension
    dicts, paths: ~1 KB) once the session runs: nothing reads it again, and it lives as long as
    the socket. ``clear`` and not ``pop``: a dict keeps its table at its largest size."""
    kind = scope["type"]
    scope.clear()
    scope["type"] = kind


def _authorization(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None
