"""Knows which sessions of this process care about a notification: routes BucketsAdvanced to the
sessions holding those buckets, UserBucketsChanged to the user's sessions, SessionsRevoked to the
sessions of the revoked sign-ins, and BatchApplied to the device's session. Devices connected to other processes are simply not found here."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping

from offsync_shared import ops_hint
from offsync_shared.envelope import Envelope
from offsync_shared.events import Event
from offsync_shared.events.batch_results import BatchApplied
from offsync_shared.events.sync_notify import BucketsAdvanced, SessionsRevoked, UserBucketsChanged
from sync_service.bucket_reads import BucketStore
from sync_service.device_access import revocation
from sync_service.live_fanout import LiveFanout
from sync_service.session import SyncSession

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, store: BucketStore | None = None) -> None:
        # With a store, idle sessions woken by one notification share one read of the new ops
        # (fanout: one query per notification, not one per device).
        self.store = store
        self.fanout = LiveFanout(store) if store is not None else None
        self.by_bucket: defaultdict[str, set[SyncSession]] = defaultdict(set)
        self.by_user: defaultdict[str, set[SyncSession]] = defaultdict(set)
        # Keyed by (user, device): a device id is the device's own name, unique only within its
        # user (a token for one user naming another user's device must not knock it off).
        self.by_device: dict[tuple[str, str], SyncSession] = {}
        self.by_batch: dict[str, SyncSession] = {}
        self.hints = 0  # ops hints heard (ops_hint)
        self._suspects: dict[SyncSession, int] = {}  # behind at the last reconcile -> newest op then
        self.reconciled = 0  # sessions the repair net made read on their own

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

    # -- event handlers (wired in app.py) ----------------------------------------------------
    async def on_buckets_advanced(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, BucketsAdvanced)
        self.advanced(event.buckets)

    def on_ops_hint(self, payload: str) -> None:
        """publish-service's NOTIFY at its commit (offsync_shared.ops_hint): the same news as the
        BucketsAdvanced event that follows it on the broker, heard a hop sooner."""
        buckets = ops_hint.decode(payload)
        if buckets is None:
            log.warning("ops hint ignored: not a bucket map", extra={"payload": payload[:200]})
            return
        self.hints += 1
        self.advanced(buckets)

    def advanced(self, buckets: Mapping[str, int]) -> None:
        """New ops up to these op ids in these buckets. Idempotent: a session at or past an op id
        ignores it, and one already waiting for a read only raises what it asks for."""
        fanout = self.fanout
        for bucket, op_id in buckets.items():
            for s in self.by_bucket.get(bucket, ()):
                if fanout is not None and op_id > s.position:
                    if s.live_eligible():
                        s.ask(op_id)
                        fanout.want_live(s)
                        continue
                    if s.enrolled():
                        # Already waiting for a shared read: no need to wake its task; if that
                        # read ends below op_id, the session is enrolled in the next one.
                        s.ask(op_id)
                        continue
                s.notify_ops(bucket, op_id)

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

    async def on_user_buckets_changed(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, UserBucketsChanged)
        for user_id in event.user_ids:
            for s in self.by_user.get(user_id, ()):
                s.notify_rebucket()

    async def on_sessions_revoked(self, event: Event, env: Envelope) -> None:
        assert isinstance(event, SessionsRevoked)
        for s in list(self.by_user.get(event.user_id, ())):
            refusal = revocation(event, s.user_id, s.device_id, s.session_id)
            if refusal is not None:
                s.revoke(refusal.close_code, refusal.reason, drop=event.reason == "device_revoked")

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


def _discard(index: defaultdict[str, set[SyncSession]], key: str, session: SyncSession) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(session)
        if not members:
            del index[key]
