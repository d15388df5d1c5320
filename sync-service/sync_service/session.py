"""One device's sync session as a transport-free async generator of server frames.

The transport (gateway.py) feeds raw client frames to :meth:`SyncSession.feed` (from the
socket's read callback; :meth:`SyncSession.receive` is its awaitable form) and sends
whatever :meth:`SyncSession.turn` (or :meth:`SyncSession.run`, the same with the waits between
turns) yields, awaiting each send; an idle session is parked (:meth:`SyncSession.park`): plain
state with no task, woken by a frame, a notification or its timer. The session produces the next
frame only once the device has taken the previous one (backpressure), and everything it holds
per device is bounded: one page of ops, a bounded inbox, a bounded error list, and at most
``max_pending_batches`` batches awaiting answers. Notifications never queue: they only raise a
flag and wake the session, which then reads what changed from the bucket store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from offsync_shared import protocol as p
from offsync_shared.auth import Principal
from offsync_shared.errors import OffsyncError
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.device_batches import BatchUploaded
from offsync_shared.events.device_batches import Change as EventChange
from sync_service import alarms
from sync_service.bucket_reads import Admission, BucketState, BucketStore, OpKey, StoredBatch
from sync_service.device_access import decide, membership_pending
from sync_service.limits import TokenBucket
from sync_service.settings import Settings

log = logging.getLogger(__name__)

MEMBERSHIP_HOLD_S = 0.5  # how long ops wait before access is read again while a publish is pending
# ``SyncSession.fresh`` when empty, as it is for nearly every session: one object, not one each.
_NONE: frozenset[str] = frozenset()
# The context idle timers run in: one shared empty one, not a copy of the caller's per timer.
_QUIET = contextvars.Context()


class Wakeup:
    """asyncio.Event for the one task that runs a session, without the Event's waiter deque
    (~600 B per idle device): a future exists only while that task waits. A parked session
    (``SyncSession.park``) has no task at all: ``set`` then calls the parked callback once."""

    __slots__ = ("_flag", "_waiter", "_wake")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None
        self._wake: Callable[[], None] | None = None

    def set(self) -> None:
        self._flag = True
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)
        wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def park(self, wake: Callable[[], None] | None) -> None:
        """Call ``wake`` (once) at the next ``set`` instead of resolving a waiter."""
        self._wake = wake

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        if self._flag:
            return
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


class Phase(Enum):
    """Where a session stands in delivering ops to its device. Only the transitions in
    ``TRANSITIONS`` happen (``SyncSession._enter`` checks); test_sync_session_phases.py walks each.

    Besides its phase, a session holds requests raised by other tasks and served at its next
    turn: ``_dirty`` (new ops may be owed), ``_own`` (the next read is its own, not a shared
    one), ``_rebucket``, ``_draining``, ``gone``, ``_close``; and ``_busy``, whether a turn is
    running (an idle session at a checkpoint lets the hub write live frames directly)."""

    OPENING = "opening"  # welcome and resume plan; not registered with the hub yet
    CATCHING_UP = "catching_up"  # not at a checkpoint: ops come from the session's own reads
    AT_CHECKPOINT = "at_checkpoint"  # the device holds every op of its buckets up to ``position``
    ENROLLED = "enrolled"  # at a checkpoint, waiting for the hub's shared read
    OFFERED = "offered"  # the shared read's frames wait for the session's next turn to send them
    SENDING_LIVE = "sending_live"  # the session's turn is sending those frames
    ENDED = "ended"  # the stream is over; nothing more is sent


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.OPENING: frozenset({Phase.CATCHING_UP, Phase.AT_CHECKPOINT, Phase.ENDED}),
    Phase.CATCHING_UP: frozenset({Phase.CATCHING_UP, Phase.AT_CHECKPOINT, Phase.ENDED}),
    # A direct live write (write_live) moves ``position`` but stays at a checkpoint.
    Phase.AT_CHECKPOINT: frozenset({Phase.AT_CHECKPOINT, Phase.CATCHING_UP, Phase.ENROLLED, Phase.ENDED}),
    Phase.ENROLLED: frozenset({Phase.AT_CHECKPOINT, Phase.OFFERED, Phase.ENDED}),
    Phase.OFFERED: frozenset({Phase.SENDING_LIVE, Phase.ENDED}),
    Phase.SENDING_LIVE: frozenset({Phase.AT_CHECKPOINT, Phase.ENDED}),
    Phase.ENDED: frozenset(),
}

_SHAREABLE = (Phase.AT_CHECKPOINT, Phase.ENROLLED)
_HOLDS_CHECKPOINT = (Phase.AT_CHECKPOINT, Phase.ENROLLED, Phase.OFFERED)


@dataclass(frozen=True, slots=True)
class Close:
    """Not a wire frame: tells the transport to close the websocket with this code and reason."""

    code: int
    reason: str


class BatchPublisher(Protocol):
    async def upload(self, batch: BatchUploaded) -> None: ...


class SessionRegistry(Protocol):
    """What a session tells the hub so notifications and batch results find it."""

    def register(self, session: SyncSession) -> None: ...
    def unregister(self, session: SyncSession) -> None: ...
    def resubscribe(self, session: SyncSession, removed: set[str], added: set[str]) -> None: ...
    def expect(self, batch_id: str, session: SyncSession) -> None: ...


class SharedReads(Protocol):
    """Reads new ops once for many idle sessions (live_fanout.py): ``want_live`` enrols a session
    at a checkpoint in the next shared read; False when it cannot (the session reads alone). The
    answer comes back through ``write_live`` / ``offer_live``, or ``read_alone``."""

    def want_live(self, session: SyncSession) -> bool: ...


@dataclass(frozen=True, slots=True)
class Encoded:
    """A server frame already encoded as JSON text, shared by every session it was built for
    (fanout: one encoding per notification, not one per device)."""

    text: str


Outgoing = p.ServerFrame | Close | Encoded


@dataclass(frozen=True, slots=True)
class PageStates:
    """From ``_stream``: the buckets' states read with its last page, in the same snapshot."""

    states: dict[str, BucketState] | None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """From ``_stream``, last: where it stopped (the key of the last op sent) and ops counted."""

    last: OpKey | int
    done: int


StreamItem = Outgoing | PageStates | StreamEnd


def result_text(batch_id: str, results: list[dict[str, Any]]) -> Encoded:
    """An upload's answer as the frame the device gets, encoded once from the result mappings."""
    return Encoded(p.encode_result(batch_id, results).decode())


class SyncSession:
    # Thousands of idle sessions per process: slots, and queues created only when first used.
    __slots__ = (
        "user_id",
        "device_id",
        "_hello",
        "store",
        "registry",
        "shared",
        "publisher",
        "s",
        "verify_token",
        "clock",
        "wall",
        "expires_at",
        "generation",
        "session_id",
        "_drop_all",
        "buckets",
        "position",
        "key",
        "fresh",
        "pending",
        "_inbox",
        "on_room",
        "_signal",
        "_errors",
        "_results",
        "_limiter",
        "_dropped_for_rate",
        "_dirty",
        "_rebucket",
        "_hold_until",
        "_draining",
        "_close",
        "gone",
        "_last_in",
        "_last_ping",
        "_last_states",
        "sent_ops",
        "answered",
        "checkpointed",
        "last_error",
        "hello_info",
        "_admission",
        "_busy",
        "_live",
        "phase",
        "_own",
        "_want",
        "combined",
        "metadata",
        "direct",
        "over",
        "alarm_tick",
        "__weakref__",
    )

    def __init__(
        self,
        *,
        principal: Principal,
        hello: p.Hello,
        store: BucketStore,
        registry: SessionRegistry,
        publisher: BatchPublisher,
        settings: Settings,
        verify_token: Callable[[str], Principal],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        admission: Admission | None = None,
        shared: SharedReads | None = None,
    ) -> None:
        self._admission = admission  # what the gateway read when it let the device in
        self.phase = Phase.OPENING
        self._busy = True  # a turn is running: shared live frames may not bypass it
        self.over = False  # the stream ended: the transport closes the connection and calls ``end``
        self.alarm_tick = 0  # while parked: the tick of alarms.py the next turn is due in
        self._live: tuple[tuple[Encoded, ...], int, int] | None = None  # what OFFERED offers
        self._own = False  # the shared read could not serve us: read alone once
        self._want = 0  # highest op id notified for our buckets
        # The device takes a checkpoint inside the ops frame: one send per live change, not two.
        self.combined = p.FEATURE_OPS_CHECKPOINT in hello.features
        # The device wants the profile's entity metadata (after welcome and after a profile change).
        self.metadata = p.FEATURE_ENTITY_METADATA in hello.features
        # Writes prebuilt wire bytes to the device's socket now, or says it can't (set by the
        # gateway when the transport offers it): live fanout without starting a turn for this session.
        self.direct: Callable[[bytes], bool] | None = None
        self.user_id = principal.user_id
        self.device_id = hello.device_id
        self._hello: p.Hello | None = hello  # until the resume plan is made
        self.store = store
        self.registry = registry
        self.shared = shared  # without one, every read is the session's own
        self.publisher = publisher
        self.s = settings
        self.verify_token = verify_token
        self.clock = clock
        self.wall = wall
        self.expires_at = principal.expires_at
        self.generation = principal.generation  # the user incarnation the token was minted for
        self.session_id = principal.session_id  # the sign-in the token belongs to (None: minted outside one)
        self._drop_all = False  # revoked: tell the device to drop every bucket before closing
        self.buckets: set[str] = set()
        self.position = 0  # op id: every op of the session's buckets up to here was sent
        self.key: OpKey | int = 0  # exact stream position (op ids are not unique across buckets)
        self.fresh: frozenset[str] = _NONE  # buckets to stream from op 0 (new to the device, or refetched)
        self.pending: dict[
            str, tuple[float, float]
        ] = {}  # batch id -> (when forwarded, when last looked for its answer)
        self._inbox: deque[p.ClientFrame] | None = None  # at most sync_inbox_size frames
        # Called when a full inbox has room again (the transport then offers the frame it holds).
        self.on_room: Callable[[], None] | None = None
        self._signal = Wakeup()
        self._errors: deque[p.Error] | None = None  # at most 16 error frames
        self._results: deque[Encoded] | None = None  # at most max_pending_batches answers
        self._limiter = TokenBucket(settings.sync_frame_rate, settings.sync_frame_burst, updated=clock())
        self._dropped_for_rate = 0
        self._dirty = True
        self._rebucket = False
        self._hold_until = 0.0  # no ops are sent before this (clock): a profile publish is pending
        self._draining = False
        self._close: Close | None = None
        self.gone = False
        self._last_in = clock()
        self._last_ping = clock()
        self._last_states: dict[str, BucketState] | None = None
        self.sent_ops = 0
        self.answered = 0  # batch answers delivered (the device registry turns these into a rate)
        self.checkpointed = -1  # the last position the device reached a checkpoint at (device registry)
        self.last_error: str | None = None  # the last error frame sent, for the device registry
        self.hello_info = (hello.client, hello.records, hello.pending)  # what the device said of itself

    # ------------------------------------------------------------------ inputs (any task) ---
    async def receive(self, raw: bytes | str) -> None:
        """One frame from the device. Waits while the inbox is full (the transport then stops
        reading the socket, which pushes back on the device)."""
        while not self.feed(raw):
            room = asyncio.Event()
            self.on_room = room.set
            await room.wait()

    def feed(self, raw: bytes | str) -> bool:
        """One frame from the device, taken now; False when the inbox is full and nothing was
        taken (offer the same frame again once ``on_room`` is called). The transport calls this
        from its read callback, so an idle device needs no task of its own to read its socket."""
        if self._inbox is not None and len(self._inbox) >= self.s.sync_inbox_size:
            return False
        now = self.clock()
        self._last_in = now
        # Rate by work, not frames: a frame costs one token per started sync_frame_work_bytes,
        # so a device cannot buy a large decode at the price of a ping.
        size = len(raw)
        if not self._limiter.take(now, min(self._limiter.burst, 1 + size // self.s.sync_frame_work_bytes)):
            self._dropped_for_rate += 1
            self._signal.set()
            return True
        if size > self.s.sync_max_frame_bytes:
            self._report(p.Error(p.ERR_FRAME_TOO_LARGE, f"frame of {size} bytes exceeds {self.s.sync_max_frame_bytes}"))
            return True
        try:
            frame = p.decode_client(raw, max_changes=self.s.sync_max_changes)
        except p.FrameError as exc:
            self._report(p.Error(exc.code, exc.message, ref=exc.ref))
            return True
        if isinstance(frame, p.Hello):
            self._report(p.Error(p.ERR_BAD_FRAME, "hello was already received on this connection", ref="hello"))
            return True
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(frame)
        self._signal.set()
        return True

    def notify_ops(self, bucket: str, op_id: int) -> None:
        if op_id > self.position or bucket in self.fresh:
            self._want = max(self._want, op_id)
            self._dirty = True
            self._signal.set()

    def read_alone(self) -> None:
        """The shared read could not serve us exactly: catch up with our own reads."""
        if self.phase is Phase.ENROLLED:
            self._enter(Phase.AT_CHECKPOINT)
        self._own = True
        self._dirty = True
        self._signal.set()

    def recheck_access(self) -> None:
        """A read found that the user may not receive ops right now (the admin schema says so,
        ahead of the bucket store): nothing from it is sent; the session re-reads its access,
        which ends it, or holds its ops until the bucket store catches up."""
        if self.phase is Phase.ENROLLED:
            self._enter(Phase.AT_CHECKPOINT)
        self._rebucket = True
        self._dirty = True
        self._signal.set()

    def shareable(self) -> bool:
        """At a checkpoint and otherwise idle, so ops above ``position`` read for many sessions at
        once are exactly what we owe the device."""
        return self.phase in _SHAREABLE and not (
            self.fresh
            or self._rebucket
            or self._draining
            or self.gone
            or self._own
            or self._close is not None
            or not self.buckets
        )

    def live_eligible(self) -> bool:
        """Idle at a checkpoint and not yet waiting for a shared read: the hub may enrol us."""
        return self.phase is Phase.AT_CHECKPOINT and not (self._busy or self._dirty) and self.shareable()

    def ask(self, op_id: int) -> None:
        """The hub enrolled us in its next shared read (for ops up to at least ``op_id``)."""
        self._want = max(self._want, op_id)
        if self.phase is Phase.AT_CHECKPOINT:
            self._enter(Phase.ENROLLED)

    def offer_live(
        self, expected_position: int, buckets: frozenset[str], frames: tuple[Encoded, ...], count: int, position: int
    ) -> None:
        """Frames (ops for our buckets above ``expected_position``, then a consistent checkpoint
        at ``position``) the hub built for us and every session like us. If we moved meanwhile,
        fall back to reading ourselves."""
        if (
            self.phase is Phase.ENROLLED
            and self.shareable()
            and self.position == expected_position
            and self.buckets == buckets
        ):
            self._live = (frames, count, position)
            self._enter(Phase.OFFERED)
        else:
            if self.phase is Phase.ENROLLED:
                self._enter(Phase.AT_CHECKPOINT)
            self._dirty = True
        self._signal.set()

    def write_live(
        self, expected_position: int, buckets: frozenset[str], wire: bytes, count: int, position: int
    ) -> bool:
        """``offer_live`` without the task switch: while this session is idle at a
        checkpoint, nothing else is being sent, so the hub's frames (already framed for the
        wire) can go straight to the socket. False when that is not so right now (busy, moved,
        socket full or closing): the caller offers the frames the usual way."""
        if self.direct is None or self._busy or self.position != expected_position or self.buckets != buckets:
            return False
        if not self.shareable() or not self.direct(wire):
            return False
        self._enter(Phase.AT_CHECKPOINT)
        self.sent_ops += count
        self.position = self.key = position
        self.checkpointed = position  # a direct live write ends at a checkpoint
        self._dirty = False  # what is still owed (``behind``), the hub enrols us for
        return True

    def at_checkpoint(self) -> bool:
        """The device holds every op of our buckets up to ``position`` (not mid-download)."""
        return self.phase in _HOLDS_CHECKPOINT and not self.fresh

    def enrolled(self) -> bool:
        """Waiting for the hub's shared read (queued or in flight)."""
        return self.phase is Phase.ENROLLED

    def behind(self) -> bool:
        """Notified of ops above what was sent."""
        return self._want > self.position

    def notify_rebucket(self) -> None:
        self._rebucket = True
        self._signal.set()

    def deliver(self, event: BatchApplied, results: list[dict[str, Any]] | None = None) -> None:
        """The answer to one of our batches; ``results``: the same results as they came off the
        bus (already validated into ``event``), which saves dumping them again."""
        self.pending.pop(event.batch_id, None)
        self.answered += 1
        if self._results is None:
            self._results = deque()
        if results is None:
            results = [r.model_dump() for r in event.results]
        self._results.append(result_text(event.batch_id, results))
        self._signal.set()

    def resend_unanswered(self) -> None:
        """The broker lost what it held, maybe batches we forwarded: ask the device to resend each
        unanswered one (same batch id; the conflict service answers a known id from its store)."""
        for batch_id in list(self.pending):
            del self.pending[batch_id]
            self._report(
                p.Error(
                    p.ERR_UNAVAILABLE,
                    "the broker lost this batch; resend it with the same batch id",
                    ref=batch_id,
                    retry_after=0.2,
                )
            )

    def leaves_quietly(self) -> bool:
        """The device is gone and sent nothing that must still be forwarded: what the next turn
        would do is only to end (the transport may end the session without running it)."""
        return self.gone and not (self._inbox and any(isinstance(f, p.Upload) for f in self._inbox))

    def disconnected(self) -> None:
        """The transport lost the device: end the stream without sending anything more."""
        self.gone = True
        self._signal.set()

    def supersede(self) -> None:
        if self._close is None:
            self._close = Close(p.CLOSE_SUPERSEDED, "superseded: this device opened a newer connection")
        self._signal.set()

    def revoke(self, code: int, reason: str, *, drop: bool) -> None:
        """The sign-in behind this session was revoked: close now (and with ``drop``, first tell
        the device to drop what it holds: a revoked device may be lost)."""
        if self._close is None:
            self._close = Close(code, reason)
            self._drop_all = drop
        self._signal.set()

    def begin_drain(self) -> None:
        self._draining = True
        self._signal.set()

    def _report(self, err: p.Error) -> None:
        self.last_error = f"{err.code}: {err.message}"[:300]
        if self._errors is None:
            self._errors = deque(maxlen=16)
        self._errors.append(err)
        self._signal.set()

    # ------------------------------------------------------------------------ the stream ---
    async def run(self) -> AsyncGenerator[Outgoing, None]:
        """The whole stream, waiting in between turns: the form for a transport that keeps a
        task per connection (and for tests). The gateway's lean transport drives ``turn``
        itself and keeps no task while the session is idle."""
        try:
            while True:
                async with contextlib.aclosing(self.turn()) as turn:
                    async for f in turn:
                        yield f
                if self.over:
                    return
                await self._wait()
        finally:
            self.end()

    async def turn(self) -> AsyncGenerator[Outgoing, None]:
        """Everything there is to do now: the opening on the first turn, then client frames,
        ops, live frames, heartbeats. Returns when the session is idle (``idle_timeout`` says
        when to run the next turn at the latest; ``_signal`` wakes it sooner) or over
        (``over``: the transport closes the connection and calls ``end``)."""
        self._busy = True
        if self.phase is Phase.OPENING:
            async for f in self._open():
                yield f
        while True:
            self._signal.clear()
            if self.gone:
                self.over = True
                await self.forward_unread_uploads()
                return
            async for f in self._service():
                yield f
            if self._close is not None:
                self.over = True
                if self._drop_all and self.buckets:
                    yield p.Drop(tuple(sorted(self.buckets)), reason=self._close.reason)
                yield self._close
                return
            if self._rebucket:
                async for f in self._rebucket_now():
                    yield f
                continue
            if self.phase is Phase.OFFERED:
                assert self._live is not None
                frames, count, position = self._live
                self._live = None
                self.sent_ops += count
                self._enter(Phase.SENDING_LIVE)
                for f in frames:
                    yield f
                self.position = self.key = position
                self._enter(Phase.AT_CHECKPOINT)
                # Notifications while the shared read was in flight only raised ``_want``.
                self._dirty = self._want > position
                continue
            if self._dirty and not self._draining and self.clock() >= self._hold_until:
                if self.phase is Phase.ENROLLED:
                    pass  # the hub's read in flight covers us; wait for it
                elif self.shareable() and self._share():
                    self._dirty = False
                else:
                    self._own = False
                    async for f in self._catch_up():
                        yield f
                    continue
            if self._draining and not self.pending:
                self.over = True
                yield Close(p.CLOSE_GOING_AWAY, "going_away: server draining; reconnect and resume")
                return
            self._busy = False
            return

    async def _open(self) -> AsyncIterator[Outgoing]:
        """Welcome, metadata and the resume plan; then the hub may route notifications to us."""
        if self._admission is not None:
            self.buckets = set(self._admission.buckets)
        else:
            self.buckets = await self.store.user_buckets(self.user_id)
        yield p.Welcome(
            user_id=self.user_id,
            buckets=tuple(sorted(self.buckets)),
            heartbeat_s=self.s.sync_heartbeat_s,
            limits={
                "max_frame_bytes": self.s.sync_max_frame_bytes,
                "max_changes": self.s.sync_max_changes,
                "max_pending_batches": self.s.sync_max_pending_batches,
                "frame_rate": int(self.s.sync_frame_rate),
                "page_size": self.s.sync_page_size,
            },
            sync_intervals=dict(self._admission.sync_intervals) if self._admission is not None else {},
        )
        if self.metadata:
            yield p.Metadata(tuple(await self.store.entity_metadata(self.user_id)))
        async for f in self._resume_plan():
            yield f
        self.registry.register(self)

    def end(self) -> None:
        """The stream is over (closed, device gone, or the transport failed): nothing more is
        sent and no notification finds this session. Idempotent."""
        self.over = True
        self.unpark()
        if self.phase is not Phase.ENDED:
            self._enter(Phase.ENDED)
            self.registry.unregister(self)

    def park(self, wake: Callable[[], None]) -> bool:
        """Idle with no task: ``wake`` is called once, when the next turn is due (a frame, a
        notification, a timer). False (nothing parked) when a wake-up already came meanwhile."""
        if self._signal.is_set() or self.over:
            return False
        alarms.for_loop().set(self, self.idle_timeout())
        self._signal.park(wake)
        return True

    def alarm(self) -> None:
        """The parked session's next turn is due (alarms.py)."""
        self._signal.set()

    def unpark(self) -> None:
        self.alarm_tick = 0
        self._signal.park(None)

    def _enter(self, phase: Phase) -> None:
        assert phase in TRANSITIONS[self.phase], f"no transition {self.phase.name} -> {phase.name}"
        self.phase = phase
        if phase is Phase.AT_CHECKPOINT and not self.fresh:
            self.checkpointed = self.position

    def _share(self) -> bool:
        """Ask the shared reads (when the gateway has them) for our new ops."""
        if self.shared is None:
            return False
        self._enter(Phase.ENROLLED)
        if not self.shared.want_live(self):
            self._enter(Phase.AT_CHECKPOINT)
            return False
        return True

    async def _resume_plan(self) -> AsyncIterator[Outgoing]:
        """Compare the device's cursor and checksums with the server's buckets: drop what the
        user lost, re-send from scratch what is new to the device or provably corrupt."""
        hello, self._hello = self._hello, None
        assert hello is not None
        held = set(hello.checksums)
        cursor = hello.cursor
        resets: set[str] = set()
        admission, self._admission = self._admission, None
        newest = admission.newest_op_id if admission is not None else await self.store.newest_op_id()
        if cursor > newest:
            # The server's op log restarted (restore, wipe): the device's cursor means nothing here.
            resets = held & self.buckets
            cursor = 0
        elif cursor > 0:
            if admission is not None and admission.states is not None:  # read with the admission
                states = {b: st for b, st in admission.states.items() if b in held}
            else:
                states = await self.store.bucket_states(self.user_id, sorted(held & self.buckets))
            resets = {b for b, st in states.items() if st.last_op_id <= cursor and st.checksum != hello.checksums[b]}
        dropped = held - self.buckets
        if dropped:
            yield p.Drop(tuple(sorted(dropped)), reason="removed")
        if resets:
            yield p.Reset(tuple(sorted(resets)))
        self.position = cursor
        self.key = cursor
        self.fresh = frozenset((self.buckets - held) | resets) or _NONE if cursor > 0 else _NONE
        self._enter(Phase.AT_CHECKPOINT if cursor > 0 and not self.fresh else Phase.CATCHING_UP)

    async def forward_unread_uploads(self) -> None:
        """The device left right after sending a batch: forward it anyway (its answer waits in
        data.batches for the device's return); nothing can be sent back now."""
        while self._inbox:
            frame = self._inbox.popleft()
            if isinstance(frame, p.Upload):
                async for _ in self._upload(frame):
                    pass

    def idle_timeout(self) -> float:
        """Seconds until the next turn is due with nothing happening: heartbeat and idle
        timeout, a pending batch's recheck, the token's expiry, a membership hold."""
        timeout = min(self.s.sync_heartbeat_s, self.s.sync_result_recheck_s if self.pending else 1e9)
        expiry_in = self.expires_at + self.s.sync_token_grace_s - self.wall()
        timeout = max(0.01, min(timeout, expiry_in + 0.01))
        if self._dirty and self._hold_until:
            timeout = max(0.01, min(timeout, self._hold_until - self.clock()))
        return timeout

    async def _wait(self) -> None:
        # A timer handle, not wait_for: no extra task per idle wait.
        timer = asyncio.get_running_loop().call_later(self.idle_timeout(), self._signal.set, context=_QUIET)
        try:
            await self._signal.wait()
        finally:
            timer.cancel()

    async def _service(self) -> AsyncIterator[Outgoing]:
        """Everything that is not ops: client frames, errors, batch answers, heartbeats, expiry."""
        while self._inbox:
            frame = self._inbox.popleft()
            if self.on_room is not None:
                self.on_room()
            async for f in self._handle(frame):
                yield f
        self._inbox = None  # an idle device keeps no empty deque (~600 B)
        while self._errors:
            yield self._errors.popleft()
        self._errors = None
        if self._dropped_for_rate:
            n, self._dropped_for_rate = self._dropped_for_rate, 0
            yield p.Error(
                p.ERR_RATE_LIMITED,
                f"{n} frame(s) ignored: more than {self.s.sync_frame_rate:g} frames/s",
                retry_after=round(max(self._limiter.retry_after(), 1 / self.s.sync_frame_rate), 3),
            )
        while self._results:
            yield self._results.popleft()
        self._results = None
        now = self.clock()
        if self.pending:
            async for f in self._recheck_pending(now):
                yield f
        if self.wall() > self.expires_at + self.s.sync_token_grace_s and self._close is None:
            self._close = Close(
                p.CLOSE_UNAUTHENTICATED, "unauthenticated: token expired; renew it and reconnect with your cursor"
            )
        if now - self._last_in > self.s.sync_idle_timeout_s and self._close is None:
            self._close = Close(p.CLOSE_TIMEOUT, "timeout: no frame from the device")
        elif now - max(self._last_in, self._last_ping) > self.s.sync_heartbeat_s:
            self._last_ping = now
            yield p.Ping(t=self.wall())

    async def _handle(self, frame: p.ClientFrame) -> AsyncIterator[Outgoing]:
        if isinstance(frame, p.Ping):
            yield p.Pong(t=frame.t)
        elif isinstance(frame, p.Pong):
            pass
        elif isinstance(frame, p.Upload):
            async for f in self._upload(frame):
                yield f
        elif isinstance(frame, p.Refetch):
            unknown = [b for b in frame.buckets if b not in self.buckets]
            if unknown:
                yield p.Error(p.ERR_UNKNOWN_BUCKET, f"not a bucket of this user: {unknown[:5]}", ref="refetch")
            wanted = tuple(sorted(set(frame.buckets) & self.buckets))
            if wanted:
                yield p.Reset(wanted)
                self.fresh |= set(wanted)
                self._dirty = True
        elif isinstance(frame, p.Auth):
            try:
                principal = self.verify_token(frame.token)
            except OffsyncError as exc:
                self._close = Close(p.CLOSE_UNAUTHENTICATED, f"unauthenticated: {exc.message}")
                return
            if (
                principal.user_id != self.user_id
                or principal.device_id not in (None, self.device_id)
                or principal.generation not in (None, self.generation)
            ):
                self._close = Close(p.CLOSE_FORBIDDEN, "forbidden: renewed token is for another user or device")
                return
            self.expires_at = principal.expires_at

    async def _upload(self, up: p.Upload) -> AsyncIterator[Outgoing]:
        if len(up.changes) > self.s.sync_max_changes:
            yield p.Error(
                p.ERR_BATCH_TOO_LARGE,
                f"batch has {len(up.changes)} changes; at most {self.s.sync_max_changes} per batch",
                ref=up.batch_id,
            )
            return
        if len({c.seq for c in up.changes}) != len(up.changes):
            yield p.Error(p.ERR_BAD_FRAME, "change seq numbers must be unique within a batch", ref=up.batch_id)
            return
        if up.batch_id in self.pending:
            return  # already forwarded; its answer is on the way
        stored = await self.store.stored_batch(up.batch_id)
        if stored is not None:
            async for f in self._answer_stored(up.batch_id, stored):
                yield f
            return
        if len(self.pending) >= self.s.sync_max_pending_batches:
            yield p.Error(
                p.ERR_RATE_LIMITED,
                f"{len(self.pending)} batches already await answers; wait for them",
                ref=up.batch_id,
                retry_after=1.0,
            )
            return
        self.pending[up.batch_id] = (self.clock(), self.clock())
        self.registry.expect(up.batch_id, self)
        # model_construct: the codec already checked every field of the frame.
        event = BatchUploaded.model_construct(
            batch_id=up.batch_id,
            device_id=self.device_id,
            user_id=self.user_id,
            changes=[
                EventChange.model_construct(
                    seq=c.seq, op=c.op, entity=c.entity, id=c.id, base_version=c.base_version, fields=c.fields
                )
                for c in up.changes
            ],
            received_at=self.wall(),
        )
        try:
            await self.publisher.upload(event)
        except Exception as exc:  # broker down: the device keeps the batch and resends it
            log.warning(
                "could not forward batch",
                extra={
                    "user_id": self.user_id,
                    "device_id": self.device_id,
                    "batch_id": up.batch_id,
                    "error": str(exc),
                },
            )
            self.pending.pop(up.batch_id, None)
            yield p.Error(
                p.ERR_UNAVAILABLE,
                "could not queue the batch; resend it with the same batch id",
                ref=up.batch_id,
                retry_after=1.0,
            )

    async def _answer_stored(self, batch_id: str, stored: StoredBatch) -> AsyncIterator[Outgoing]:
        if stored.user_id != self.user_id:
            yield p.Error(p.ERR_BAD_FRAME, "batch id already used by another user; use a fresh UUID", ref=batch_id)
            return
        self.pending.pop(batch_id, None)
        yield result_text(batch_id, stored.results)

    async def _recheck_pending(self, now: float) -> AsyncIterator[Outgoing]:
        """A BatchApplied can be missed (e.g. this gateway was not yet reading the topic): after a
        while, look for the stored answer instead of waiting forever. A batch with no stored
        answer long after it was forwarded may be lost (a broker that lost its state, a poll that
        could not even store its refusal): ask the device to resend it (same id; a batch that was
        only slow is answered once, the conflict service dedupes ids)."""
        for batch_id, (forwarded, looked) in list(self.pending.items()):
            if now - looked < self.s.sync_result_recheck_s:
                continue
            self.pending[batch_id] = (forwarded, now)
            stored = await self.store.stored_batch(batch_id)
            if stored is not None and batch_id in self.pending:
                async for f in self._answer_stored(batch_id, stored):
                    yield f
            elif stored is None and batch_id in self.pending and now - forwarded >= self.s.sync_result_resend_s:
                del self.pending[batch_id]
                yield p.Error(
                    p.ERR_UNAVAILABLE,
                    f"no answer after {now - forwarded:.0f} s; resend it with the same batch id",
                    ref=batch_id,
                    retry_after=0.2,
                )

    async def _rebucket_now(self) -> AsyncIterator[Outgoing]:
        self._rebucket = False
        facts = await self.store.access(self.user_id)
        refusal = decide(facts, self.generation)
        if refusal is None and membership_pending(facts):
            # Try again shortly; the user.buckets_changed that follows the publish wakes us sooner.
            self._hold_until = self.clock() + MEMBERSHIP_HOLD_S
            self._dirty = True
            return
        self._hold_until = 0.0
        if refusal is not None:
            if self.buckets:
                yield p.Drop(tuple(sorted(self.buckets)), reason=refusal.reason)
            self.registry.resubscribe(self, set(self.buckets), set())
            self.buckets = set()
            self._close = Close(refusal.close_code, refusal.reason)
            return
        new = await self.store.user_buckets(self.user_id)
        if self.metadata:  # the profile (and so its entities) may have changed
            yield p.Metadata(tuple(await self.store.entity_metadata(self.user_id)))
        removed, added = self.buckets - new, new - self.buckets
        if not removed and not added:
            return
        self.buckets = new
        self.fresh = self.fresh - removed or _NONE
        self.registry.resubscribe(self, removed, added)
        if removed:
            yield p.Drop(tuple(sorted(removed)), reason="removed")
        self.fresh |= added
        self._dirty = True

    async def _stream(
        self, buckets: list[str], after: OpKey | int, done: int, total: int, resumable: bool = False
    ) -> AsyncIterator[StreamItem]:
        """Pages of ops after ``after``: yields frames, the last page's PageStates, then StreamEnd."""
        limit = self.s.sync_page_size
        last: OpKey | int = after
        while True:
            page = await self.store.ops_page(self.user_id, buckets, last, limit)
            if not page.clears(self.generation):
                self.recheck_access()  # the admin schema is ahead of the buckets: send nothing
                break
            if page.count == 0:
                yield PageStates(page.states)
                break
            assert page.last is not None
            last = page.last
            done += page.count
            self.sent_ops += page.count
            # Op ids may repeat across the rows of one op, so only ops below the page's last op id
            # are certainly complete: that is the resume point.
            resume = page.last[0] - 1 if resumable and page.last[0] > 1 else None
            yield p.Ops(ops=page.ops, done=done, total=max(total, done), resume=resume)
            # Between pages: answer pings and uploads, so a long download never starves them.
            async for f in self._service():
                yield f
            if self._close is not None or self._rebucket or self.gone:
                break
            if page.count < limit:
                yield PageStates(page.states)
                break
        yield StreamEnd(last, done)

    async def _catch_up(self) -> AsyncIterator[Outgoing]:
        """Send every op the device lacks, in bounded pages, then a checkpoint if consistent."""
        self._dirty = False
        self._enter(Phase.CATCHING_UP)
        streamed = 0
        fresh = sorted(self.fresh & self.buckets)
        known = sorted(self.buckets - set(fresh))
        total = 0
        if fresh or self.position == 0:
            total = await self.store.count_ops(self.user_id, fresh, 0) if fresh else 0
            if known:
                total += await self.store.count_ops(self.user_id, known, self.position)
        done = 0
        snapshot: dict[str, BucketState] | None = None
        # The last ops frame is held back until we know whether a checkpoint follows it: a device
        # that takes one inside the ops frame then gets one frame (one write, one transaction on
        # the device) instead of two. Any other frame sends the held one first (order is kept).
        # A page the count says is not the last goes at once (the first page of a download no
        # longer waits for the second one's read; a count that falls short only means holding).
        # The count itself stays before the first read: run beside it, as a task per catch-up,
        # it cost ~2 KB per idle device (connections: 7.0-7.3 -> 9.3-9.5 KB) for ~3 % of initial_sync.
        held: p.Ops | None = None
        # Buckets the device holds resume from its key; fresh ones stream from the start.
        parts = [(known, self.key, True), (fresh, 0, False)]
        for part, after, resuming in parts:
            if not part:
                continue
            async for item in self._stream(part, after, done, total, resumable=resuming and not fresh):
                if isinstance(item, PageStates):
                    if resuming:
                        snapshot = item.states
                elif isinstance(item, StreamEnd):
                    streamed += item.done - done
                    done = item.done
                    if resuming and not isinstance(item.last, tuple):
                        self.key = item.last
                    elif (resuming or not known) and isinstance(item.last, tuple):
                        self.key = item.last
                        self.position = max(self.position, item.last[0])
                elif isinstance(item, p.Ops) and self.combined:
                    if held is not None:
                        yield held
                        held = None
                    if item.done < item.total:
                        yield item  # more ops are counted after it: no checkpoint can ride on it
                    else:
                        held = item
                else:
                    if held is not None:
                        yield held
                        held = None
                    yield item
            if self._close is not None or self._rebucket or self.gone:
                if held is not None:
                    yield held
                self._dirty = True
                return
            if not resuming:
                self.fresh = self.fresh - set(fresh) or _NONE
        if fresh or snapshot is None or set(known) != self.buckets:
            states = await self.store.bucket_states(self.user_id, sorted(self.buckets))
        else:
            states = snapshot  # read with the last page, in the same snapshot as its ops
        newest = max((st.last_op_id for st in states.values()), default=0)
        if newest > self.position and streamed == 0 and states == self._last_states:
            # The bucket rows say ops exist past our position but the log has none to give
            # (compacted away): the bucket rows are the truth.
            self.position = newest
            self.key = newest
        self._last_states = states
        if newest <= self.position:
            checkpoint = p.Checkpoint(
                cursor=self.position,
                checksums={b: (states[b].checksum if b in states else 0) for b in sorted(self.buckets)},
            )
            if held is not None:
                yield dataclasses.replace(held, checkpoint=checkpoint)
            else:
                yield checkpoint
            self.key = self.position  # every op up to position is sent: resume by op id
            self._enter(Phase.AT_CHECKPOINT)
            # States at a checkpoint (every newest op at or below position) can never equal a
            # later read that finds an op above it: an idle session need not keep them.
            self._last_states = None
        else:
            if held is not None:
                yield held
            self._dirty = True  # ops committed while we streamed: one more round
