"""Knows which sessions of this process care about a notification: routes BucketsAdvanced to the
sessions holding those buckets, UserBucketsChanged to the user's sessions, and BatchApplied to
the device's session. Devices connected to other processes are simply not found here."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import orjson

from offsync_shared import protocol as p
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.sync_notify import BucketsAdvanced, UserBucketsChanged
from sync_service.session import Encoded, SyncSession
from sync_service.store import BucketStore, LiveBatch
from sync_service.ws_transport import prebuilt_text, text_frame

log = logging.getLogger(__name__)

LIVE_LIMIT = 1000  # ops per bucket read for a shared live batch; beyond, sessions catch up alone


class Hub:
    def __init__(self, store: BucketStore | None = None) -> None:
        # With a store, idle sessions woken by one notification share one read of the new ops
        # (fanout: one query per notification, not one per device).
        self.store = store
        self.shared_deliveries = 0
        self.direct_deliveries = 0  # of those, written straight to an idle session's socket
        self.by_bucket: defaultdict[str, set[SyncSession]] = defaultdict(set)
        self.by_user: defaultdict[str, set[SyncSession]] = defaultdict(set)
        # Keyed by (user, device): a device id is the device's own name, unique only within its
        # user (a token for one user naming another user's device must not knock it off).
        self.by_device: dict[tuple[str, str], SyncSession] = {}
        self.by_batch: dict[str, SyncSession] = {}
        self._wanting: dict[SyncSession, int] = {}  # sessions for the next shared read -> their position
        self._suspects: dict[SyncSession, int] = {}  # behind at the last reconcile -> newest op then
        self.reconciled = 0  # sessions the repair net made read on their own
        self._flusher: asyncio.Task[None] | None = None

    # -- SessionRegistry ---------------------------------------------------------------------
    def register(self, session: SyncSession) -> None:
        key = (session.user_id, session.device_id)
        old = self.by_device.get(key)
        if old is not None and old is not session:
            old.supersede()
        self.by_device[key] = session
        self.by_user[session.user_id].add(session)
        for b in session.buckets:
            self.by_bucket[b].add(session)

    def unregister(self, session: SyncSession) -> None:
        key = (session.user_id, session.device_id)
        if self.by_device.get(key) is session:
            del self.by_device[key]
        _discard(self.by_user, session.user_id, session)
        for b in session.buckets:
            _discard(self.by_bucket, b, session)
        for batch_id in list(session.pending):
            if self.by_batch.get(batch_id) is session:
                del self.by_batch[batch_id]

    def resubscribe(self, session: SyncSession, removed: set[str], added: set[str]) -> None:
        for b in removed:
            _discard(self.by_bucket, b, session)
        for b in added:
            self.by_bucket[b].add(session)

    def expect(self, batch_id: str, session: SyncSession) -> None:
        self.by_batch[batch_id] = session

    def want_live(self, session: SyncSession) -> bool:
        """A session at a checkpoint owes its device new ops: enrol it in the next shared read.
        Requests arriving while a read is in flight wait for the next one, so a burst of
        notifications (or of reconnecting devices) costs a few reads, not one per device."""
        if self.store is None:
            return False
        self._wanting[session] = session.position
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="hub-shared-reads")
        return True

    # -- event handlers (wired in app.py) ----------------------------------------------------
    async def on_buckets_advanced(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, BucketsAdvanced)
        for bucket, op_id in event.buckets.items():
            for s in self.by_bucket.get(bucket, ()):
                if self.store is not None and op_id > s.position:
                    if s.live_eligible():
                        s.ask(op_id)
                        self.want_live(s)
                        continue
                    if s.enrolled():
                        # Already waiting for a shared read: no need to wake its task; if that
                        # read ends below op_id, the session is enrolled in the next one.
                        s.ask(op_id)
                        continue
                s.notify_ops(bucket, op_id)

    async def _flush(self) -> None:
        while self._wanting:
            wanting, self._wanting = self._wanting, {}
            try:
                await self._share_live(wanting)
            except Exception:  # noqa: BLE001 - a session left waiting for this read would wait for ever
                log.exception("shared live read failed; sessions read on their own")
                for s in wanting:
                    s.read_alone()

    async def reconcile(self) -> int:
        """The repair net (``Settings.sync_reconcile_s``): a session at a checkpoint that is
        behind its buckets' newest op now and was already behind that op at the previous round
        missed a notification (or waits for a read that never came): it reads on its own.
        One small query per round; lag between two rounds is normal delivery, left alone."""
        if self.store is None or not self.by_bucket:
            self._suspects = {}
            return 0
        newest = await self.store.newest_ops(list(self.by_bucket))
        behind: dict[SyncSession, int] = {}
        for bucket, op_id in newest.items():
            for s in self.by_bucket.get(bucket, ()):
                if op_id > s.position and s.at_checkpoint():
                    behind[s] = max(behind.get(s, 0), op_id)
        stuck = [s for s, op_id in self._suspects.items() if s in behind and s.position < op_id]
        self._suspects = behind
        for s in stuck:
            s.read_alone()
        self.reconciled += len(stuck)
        return len(stuck)

    async def reconcile_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)  # a period, not a wait for a condition
            try:
                n = await self.reconcile()
            except Exception:  # noqa: BLE001 - the database may be away; try again next round
                log.warning("reconcile round failed", exc_info=True)
                continue
            if n:
                log.warning("sessions behind a missed notification read on their own", extra={"sessions": n})

    async def _share_live(self, idle: dict[SyncSession, int]) -> None:
        """Read the new ops once for all enrolled sessions; sessions with the same buckets and
        position share one encoded frame. Any session the read cannot serve exactly (lost
        membership, a big burst, moved meanwhile) catches up on its own."""
        assert self.store is not None
        buckets = sorted({b for s in idle for b in s.buckets})
        users = sorted({s.user_id for s in idle})
        try:
            batch = await self.store.live_batch(buckets, users, min(idle.values()), LIVE_LIMIT)
        except Exception:
            log.exception("shared live read failed; sessions read on their own")
            for s in idle:
                s.read_alone()
            return
        groups: defaultdict[tuple[int, frozenset[str]], list[SyncSession]] = defaultdict(list)
        for s, since in idle.items():
            groups[(since, frozenset(s.buckets))].append(s)
        # Row positions per bucket, once: each group then looks only at its own buckets' rows
        # (many devices with buckets of their own, e.g. an upload storm, would otherwise make
        # every group scan every row: groups x rows).
        by_bucket: defaultdict[str, list[int]] = defaultdict(list)
        for i, (_, b, _) in enumerate(batch.rows):
            by_bucket[b].append(i)
        ops_parts: dict[tuple[int, ...], tuple[bytes, int]] = {}
        for (since, mine), sessions in groups.items():
            live = _LiveFrames.build(batch, since, mine, by_bucket, ops_parts) if batch.complete else None
            for s in sessions:
                if live is None or any((s.user_id, b) not in batch.members for b in mine):
                    s.read_alone()  # a lost bucket or a big burst: the session's own path handles it
                    continue
                if s.write_live(since, mine, live.wire(s.combined), live.count, live.position):
                    self.direct_deliveries += 1
                    if s.behind():  # notified of newer ops while this read was in flight
                        s.ask(0)
                        self.want_live(s)
                else:
                    s.offer_live(
                        since, mine, live.combined() if s.combined else live.split(), live.count, live.position
                    )
                self.shared_deliveries += 1

    async def on_user_buckets_changed(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, UserBucketsChanged)
        for user_id in event.user_ids:
            for s in self.by_user.get(user_id, ()):
                s.notify_rebucket()

    async def on_batch_applied(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, BatchApplied)
        s = self.by_batch.pop(event.batch_id, None) or self.by_device.get((event.user_id, event.device_id))
        if s is not None and s.user_id == event.user_id and s.device_id == event.device_id:
            results = env.payload.get("results")
            s.deliver(event, results if isinstance(results, list) else None)

    async def resend_unanswered(self) -> int:
        """After the broker lost its state: every session asks its device to resend the batches
        still awaiting an answer. Returns how many sessions had some."""
        waiting = {s for s in self.by_device.values() if s.pending}
        for s in waiting:
            s.resend_unanswered()
        return len(waiting)

    @property
    def sessions(self) -> int:
        return len(self.by_device)


class _LiveFrames:
    """The ops of some buckets above a position and the checkpoint after them, encoded once
    (in each form asked for) for every session with those buckets at that position."""

    __slots__ = ("ops", "count", "position", "checkpoint", "_split", "_combined", "_wire_split", "_wire_combined")

    def __init__(self, ops: bytes | None, count: int, position: int, checkpoint: p.Checkpoint) -> None:
        self.ops, self.count, self.position, self.checkpoint = ops, count, position, checkpoint
        self._split: tuple[Encoded, ...] | None = None
        self._combined: tuple[Encoded, ...] | None = None
        self._wire_split: bytes | None = None
        self._wire_combined: bytes | None = None

    @classmethod
    def build(
        cls,
        batch: LiveBatch,
        since: int,
        mine: frozenset[str],
        by_bucket: dict[str, list[int]],
        ops_parts: dict[tuple[int, ...], tuple[bytes, int]],
    ) -> _LiveFrames | None:
        """None when the read cannot serve these sessions exactly. ``by_bucket``: positions of
        each bucket's rows in ``batch.rows``; ``ops_parts``: the ops JSON (and newest op id) of
        each set of rows already joined for another group: groups differ mostly by a bucket
        of their user's own that got nothing new, so they share the ops and differ only in the
        checkpoint."""
        rows = batch.rows
        at = tuple(sorted(i for b in mine for i in by_bucket.get(b, ()) if rows[i][0] > since))
        if len(at) > LIVE_LIMIT:
            return None  # more than a small page: the paged catch-up bounds frame sizes
        ops: bytes | None = None
        position = since
        if at:
            part = ops_parts.get(at)
            if part is None:
                part = ops_parts[at] = (
                    ("[" + ",".join(rows[i][2] for i in at) + "]").encode(),
                    max(rows[i][0] for i in at),
                )
            ops, position = part
        states = batch.states
        checksums: dict[str, int] = {}
        for b in sorted(mine):
            st = states.get(b)
            if st is None:
                checksums[b] = 0
            elif st.last_op_id > position:
                return None
            else:
                checksums[b] = st.checksum
        return cls(ops, len(at), position, p.Checkpoint(cursor=position, checksums=checksums))

    def wire(self, combined: bool) -> bytes:
        """The frames of one form, framed for the wire (what ``write_prebuilt`` sends)."""
        if not combined:
            if self._wire_split is None:
                self._wire_split = prebuilt_text([e.text for e in self.split()])
            return self._wire_split
        if self._wire_combined is None:
            if self.ops is None:
                self._wire_combined = prebuilt_text([e.text for e in self.combined()])
            else:
                # What p.encode makes of the combined Ops frame, without building it first.
                cp = orjson.dumps({"cursor": self.checkpoint.cursor, "checksums": self.checkpoint.checksums})
                self._wire_combined = text_frame(
                    b'{"type":"ops","ops":%b,"done":%d,"total":%d,"checkpoint":%b}'
                    % (self.ops, self.count, self.count, cp)
                )
        return self._wire_combined

    def split(self) -> tuple[Encoded, ...]:
        """Ops frame then checkpoint frame (devices without FEATURE_OPS_CHECKPOINT)."""
        if self._split is None:
            cp = Encoded(p.encode(self.checkpoint).decode())
            if self.ops is None:
                self._split = (cp,)
            else:
                frame = p.Ops(ops=orjson.Fragment(self.ops), done=self.count, total=self.count)
                self._split = (Encoded(p.encode(frame).decode()), cp)
        return self._split

    def combined(self) -> tuple[Encoded, ...]:
        """One ops frame carrying the checkpoint (or the bare checkpoint when nothing is new)."""
        if self._combined is None:
            if self.ops is None:
                self._combined = self.split()
            else:
                frame = p.Ops(
                    ops=orjson.Fragment(self.ops), done=self.count, total=self.count, checkpoint=self.checkpoint
                )
                self._combined = (Encoded(p.encode(frame).decode()),)
        return self._combined


def _discard(index: defaultdict[str, set[SyncSession]], key: str, session: SyncSession) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(session)
        if not members:
            del index[key]
