"""Serves idle sessions their new ops with shared reads: sessions at a checkpoint that a
notification concerns are enrolled, one read fetches the new ops of all their buckets, and each
group of sessions with the same buckets and position gets its frames encoded (and framed for the
wire) once. A session the read cannot serve exactly reads on its own.

The session sees this only through ``session.SharedReads`` (``want_live``)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import orjson

from offsync_shared import protocol as p
from sync_service.bucket_reads import BucketStore, LiveBatch
from sync_service.session import Encoded, SyncSession
from sync_service.ws_frames import prebuilt_text, text_frame

log = logging.getLogger(__name__)

LIVE_LIMIT = 1000  # ops per bucket read for a shared live batch; beyond, sessions catch up alone


class LiveFanout:
    """Implements ``session.SharedReads`` over a bucket store (one per gateway process)."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store
        self.shared_deliveries = 0
        self.direct_deliveries = 0  # of those, written straight to an idle session's socket
        self._wanting: dict[SyncSession, int] = {}  # sessions for the next shared read -> their position
        self._flusher: asyncio.Task[None] | None = None

    def want_live(self, session: SyncSession) -> bool:
        """A session at a checkpoint owes its device new ops: enrol it in the next shared read.
        Requests arriving while a read is in flight wait for the next one, so a burst of
        notifications (or of reconnecting devices) costs a few reads, not one per device."""
        self._wanting[session] = session.position
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="live-fanout-reads")
        return True

    async def _flush(self) -> None:
        while self._wanting:
            wanting, self._wanting = self._wanting, {}
            try:
                await self._share_live(wanting)
            except Exception:  # noqa: BLE001 - a session left waiting for this read would wait for ever
                log.exception("shared live read failed; sessions read on their own")
                for s in wanting:
                    s.read_alone()

    async def _share_live(self, idle: dict[SyncSession, int]) -> None:
        """Read the new ops once for all enrolled sessions; sessions with the same buckets and
        position share one encoded frame. Any session the read cannot serve exactly (lost
        membership, a big burst, moved meanwhile) catches up on its own."""
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
            live = LiveFrames.build(batch, since, mine, by_bucket, ops_parts) if batch.complete else None
            for s in sessions:
                if not batch.clears(s.user_id, s.generation):
                    s.recheck_access()  # the admin schema is ahead of the buckets: send nothing
                    continue
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


class LiveFrames:
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
    ) -> LiveFrames | None:
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
                part = ops_parts[at] = (p.join_op_rows(rows[i][2] for i in at), max(rows[i][0] for i in at))
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
                self._wire_combined = text_frame(p.encode_ops_with_checkpoint(self.ops, self.count, self.checkpoint))
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
