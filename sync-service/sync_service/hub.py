"""Knows which sessions of this process care about a notification: routes BucketsAdvanced to the
sessions holding those buckets, UserBucketsChanged to the user's sessions, and BatchApplied to
the device's session. Devices connected to other processes are simply not found here."""

from __future__ import annotations

from collections import defaultdict

from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.sync_notify import BucketsAdvanced, UserBucketsChanged
from sync_service.session import SyncSession


class Hub:
    def __init__(self) -> None:
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
        for bucket, op_id in event.buckets.items():
            for s in self.by_bucket.get(bucket, ()):
                s.notify_ops(bucket, op_id)

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
