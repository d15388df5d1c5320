"""Knows which sessions of this process care about a notification: routes BucketsAdvanced to the
sessions holding those buckets, UserBucketsChanged to the user's sessions, and BatchApplied to
the device's session. Devices connected to other processes are simply not found here."""

from __future__ import annotations

import logging
from collections import defaultdict

import orjson

from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.sync_notify import BucketsAdvanced, UserBucketsChanged
from sync_service.session import SyncSession
from sync_service.store import BucketStore

log = logging.getLogger(__name__)

LIVE_LIMIT = 1000  # ops per bucket read for a shared live batch; beyond, sessions catch up alone


class Hub:
    def __init__(self, store: BucketStore | None = None) -> None:
        # With a store, idle sessions woken by one notification share one read of the new ops
        # (fanout: one query per notification, not one per device).
        self.store = store
        self.shared_deliveries = 0
        self.by_bucket: defaultdict[str, set[SyncSession]] = defaultdict(set)
        self.by_user: defaultdict[str, set[SyncSession]] = defaultdict(set)
        self.by_device: dict[str, SyncSession] = {}
        self.by_batch: dict[str, SyncSession] = {}

    # -- SessionRegistry ---------------------------------------------------------------------
    def register(self, session: SyncSession) -> None:
        old = self.by_device.get(session.device_id)
        if old is not None and old is not session:
            old.supersede()
        self.by_device[session.device_id] = session
        self.by_user[session.user_id].add(session)
        for b in session.buckets:
            self.by_bucket[b].add(session)

    def unregister(self, session: SyncSession) -> None:
        if self.by_device.get(session.device_id) is session:
            del self.by_device[session.device_id]
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

    # -- event handlers (wired in app.py) ----------------------------------------------------
    async def on_buckets_advanced(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, BucketsAdvanced)
        idle: dict[SyncSession, int] = {}
        for bucket, op_id in event.buckets.items():
            for s in self.by_bucket.get(bucket, ()):
                if self.store is not None and op_id > s.position and s.live_eligible():
                    idle[s] = s.position
                else:
                    s.notify_ops(bucket, op_id)
        if idle:
            await self._share_live(idle)

    async def _share_live(self, idle: dict[SyncSession, int]) -> None:
        """Read the new ops once for all idle sessions and hand each its part with a checkpoint;
        any session the batch cannot serve exactly catches up on its own."""
        assert self.store is not None
        buckets = sorted({b for s in idle for b in s.buckets})
        users = sorted({s.user_id for s in idle})
        try:
            batch = await self.store.live_batch(buckets, users, min(idle.values()), LIVE_LIMIT)
        except Exception:
            log.exception("shared live read failed; sessions read on their own")
            for s in idle:
                s.notify_ops("", 2**62)
            return
        for s, since in idle.items():
            mine = s.buckets
            if not batch.complete or any((s.user_id, b) not in batch.members for b in mine):
                s.notify_ops("", 2**62)  # a lost bucket or a big burst: the session's own path handles it
                continue
            rows = [j for op_id, b, j in batch.rows if op_id > since and b in mine]
            position = max((op_id for op_id, b, _ in batch.rows if op_id > since and b in mine), default=since)
            states = {b: batch.states.get(b) for b in mine}
            if any(st is not None and st.last_op_id > position for st in states.values()):
                s.notify_ops("", 2**62)
                continue
            ops = orjson.Fragment("[" + ",".join(rows) + "]")
            checksums = {b: (st.checksum if st is not None else 0) for b, st in sorted(states.items())}
            s.offer_live(since, ops, len(rows), position, checksums)
            self.shared_deliveries += 1

    async def on_user_buckets_changed(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, UserBucketsChanged)
        for user_id in event.user_ids:
            for s in self.by_user.get(user_id, ()):
                s.notify_rebucket()

    async def on_batch_applied(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, BatchApplied)
        s = self.by_batch.pop(event.batch_id, None) or self.by_device.get(event.device_id)
        if s is not None and s.user_id == event.user_id and s.device_id == event.device_id:
            s.deliver(event)

    @property
    def sessions(self) -> int:
        return len(self.by_device)


def _discard(index: defaultdict[str, set[SyncSession]], key: str, session: SyncSession) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(session)
        if not members:
            del index[key]
