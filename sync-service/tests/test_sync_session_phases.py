"""The sync session's phases (session.Phase): the declared transitions, and each one walked by a
session driven against an in-memory bucket store and a fake shared reader (no network, no database)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from test_sync_unit import FakeStore, NullPublisher, NullRegistry

from offsync_shared import protocol as p
from offsync_shared.auth import Principal
from sync_service.session import TRANSITIONS, Encoded, Phase, SyncSession
from sync_service.settings import Settings


class Recording(SyncSession):
    """A session that remembers every phase it entered."""

    __slots__ = ("seen",)
    seen: list[Phase]

    def _enter(self, phase: Phase) -> None:
        super()._enter(phase)
        self.seen.append(phase)


class FakeShared:
    """session.SharedReads: records who asked; ``accept`` says whether it enrols them."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.asked: list[SyncSession] = []

    def want_live(self, session: SyncSession) -> bool:
        self.asked.append(session)
        return self.accept


def _session(store: FakeStore, shared: FakeShared | None, cursor: int = 0, checksum: int | None = None) -> Recording:
    s = Recording(
        principal=Principal("u", "offsync-device", 4e9, None),
        hello=p.Hello("d", cursor=cursor, checksums={} if checksum is None else {"b": checksum}),
        store=store,
        registry=NullRegistry(),
        publisher=NullPublisher(),
        settings=Settings(env="test", sync_page_size=100, sync_heartbeat_s=60, sync_idle_timeout_s=120),
        verify_token=lambda t: None,  # type: ignore[arg-type,return-value]
        shared=shared,
    )
    s.seen = [Phase.OPENING]
    return s


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(500):  # loop turns, not time: the session runs on this loop
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def _running(session: SyncSession) -> tuple[list[Any], asyncio.Task[None]]:
    sent: list[Any] = []

    async def pump() -> None:
        async for f in session.run():
            sent.append(f)

    task = asyncio.create_task(pump())
    await _until(lambda: session.phase is not Phase.OPENING and not session._busy)
    return sent, task


async def _synced(store: FakeStore, shared: FakeShared | None) -> tuple[Recording, list[Any], asyncio.Task[None]]:
    """A session resumed at the store's newest op with the right checksum, its first checkpoint
    sent (by the shared reader when there is one, as the hub would): at a checkpoint, asleep."""
    states = await store.bucket_states("u", ["b"])
    session = _session(store, shared, cursor=len(store.ops), checksum=states["b"].checksum)
    sent, task = await _running(session)
    if session.phase is Phase.ENROLLED:
        checkpoint = Encoded(p.encode(p.Checkpoint(session.position, {"b": states["b"].checksum})).decode())
        session.offer_live(session.position, frozenset(session.buckets), (checkpoint,), 0, session.position)
        await _until(lambda: session.phase is Phase.AT_CHECKPOINT and not session._busy)
        assert shared is not None
        shared.asked.clear()
    assert session.phase is Phase.AT_CHECKPOINT
    return session, sent, task


async def _end(session: SyncSession, task: asyncio.Task[None]) -> None:
    session.disconnected()
    await task
    assert session.phase is Phase.ENDED


# ----------------------------------------------------------------------- the declared table ---


def test_every_phase_is_reachable_and_every_phase_can_end() -> None:
    reach, todo = {Phase.OPENING}, [Phase.OPENING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert reach == set(Phase)
    assert TRANSITIONS[Phase.ENDED] == frozenset()
    assert all(Phase.ENDED in TRANSITIONS[ph] for ph in Phase if ph is not Phase.ENDED)


UNDECLARED = [
    (Phase.OPENING, Phase.ENROLLED),
    (Phase.CATCHING_UP, Phase.ENROLLED),
    (Phase.ENROLLED, Phase.CATCHING_UP),
    (Phase.OFFERED, Phase.AT_CHECKPOINT),
    (Phase.SENDING_LIVE, Phase.CATCHING_UP),
    (Phase.ENDED, Phase.AT_CHECKPOINT),
]


@pytest.mark.parametrize("src,dst", UNDECLARED, ids=[f"{a.name}->{b.name}" for a, b in UNDECLARED])
def test_an_undeclared_transition_is_refused(src: Phase, dst: Phase) -> None:
    session = _session(FakeStore(0), None)
    session.phase = src
    with pytest.raises(AssertionError, match="no transition"):
        session._enter(dst)


# ------------------------------------------------------------------- each transition walked ---


async def test_a_new_device_catches_up_then_sits_at_a_checkpoint() -> None:
    session = _session(FakeStore(250), None)
    sent, task = await _running(session)
    assert session.seen[:3] == [Phase.OPENING, Phase.CATCHING_UP, Phase.CATCHING_UP]
    assert session.phase is Phase.AT_CHECKPOINT and isinstance(sent[-1], p.Checkpoint) and sent[-1].cursor == 250
    await _end(session, task)


@pytest.mark.parametrize("shared", [None, FakeShared()], ids=["own-read", "shared-read"])
async def test_a_device_resuming_in_sync_starts_at_its_checkpoint_and_confirms_it(shared: FakeShared | None) -> None:
    session, sent, task = await _synced(FakeStore(5), shared)
    if shared is None:
        assert session.seen == [Phase.OPENING, Phase.AT_CHECKPOINT, Phase.CATCHING_UP, Phase.AT_CHECKPOINT]
    else:
        assert session.seen == [
            Phase.OPENING,
            Phase.AT_CHECKPOINT,
            Phase.ENROLLED,
            Phase.OFFERED,
            Phase.SENDING_LIVE,
            Phase.AT_CHECKPOINT,
        ]
    assert isinstance(sent[0], p.Welcome) and len(sent) == 2  # then the checkpoint at its cursor
    await _end(session, task)


async def test_new_ops_with_shared_reads_enrol_and_the_offer_is_sent_live() -> None:
    store, shared = FakeStore(5), FakeShared()
    session, sent, task = await _synced(store, shared)
    session.notify_ops("b", 6)
    await _until(lambda: session.phase is Phase.ENROLLED and not session._busy)
    assert shared.asked == [session] and session.enrolled()
    frames = (Encoded('{"type":"ops"}'), Encoded('{"type":"checkpoint"}'))
    session.offer_live(5, frozenset({"b"}), frames, 1, 6)
    assert session.phase is Phase.OFFERED
    await _until(lambda: session.phase is Phase.AT_CHECKPOINT and not session._busy)
    assert session.seen[-3:] == [Phase.OFFERED, Phase.SENDING_LIVE, Phase.AT_CHECKPOINT]
    assert sent[-2:] == list(frames) and session.position == 6 and session.sent_ops == 1
    await _end(session, task)


async def test_an_offer_built_for_another_position_is_refused_and_the_session_asks_again() -> None:
    store, shared = FakeStore(5), FakeShared()
    session, sent, task = await _synced(store, shared)
    session.notify_ops("b", 6)
    await _until(lambda: session.phase is Phase.ENROLLED and not session._busy)
    before = len(sent)
    session.offer_live(4, frozenset({"b"}), (Encoded("x"),), 1, 6)  # built for position 4: not ours
    assert session.phase is Phase.AT_CHECKPOINT
    await _until(lambda: len(shared.asked) == 2 and not session._busy)
    assert session.seen[-3:] == [Phase.ENROLLED, Phase.AT_CHECKPOINT, Phase.ENROLLED]
    assert len(sent) == before and session.position == 5
    await _end(session, task)


async def test_read_alone_while_enrolled_catches_up_with_its_own_reads() -> None:
    store, shared = FakeStore(5), FakeShared()
    session, sent, task = await _synced(store, shared)
    session.notify_ops("b", 6)
    await _until(lambda: session.phase is Phase.ENROLLED and not session._busy)
    store.ops.append((6, "b", "put", "account", "r5", 1, {"i": 5}))
    session.read_alone()
    await _until(lambda: session.phase is Phase.AT_CHECKPOINT and session.position == 6 and not session._busy)
    assert session.seen[-4:] == [Phase.ENROLLED, Phase.AT_CHECKPOINT, Phase.CATCHING_UP, Phase.AT_CHECKPOINT]
    assert shared.asked == [session], "the second read was its own, not shared"
    await _end(session, task)


async def test_a_shared_reader_that_declines_leaves_the_session_to_read_alone() -> None:
    store, shared = FakeStore(5), FakeShared(accept=False)
    session, _, task = await _synced(store, shared)
    store.ops.append((6, "b", "put", "account", "r5", 1, {"i": 5}))
    session.notify_ops("b", 6)
    await _until(lambda: session.position == 6 and not session._busy)
    assert session.seen[-4:] == [Phase.ENROLLED, Phase.AT_CHECKPOINT, Phase.CATCHING_UP, Phase.AT_CHECKPOINT]
    await _end(session, task)


async def test_a_direct_live_write_ends_the_enrolment_at_the_new_checkpoint() -> None:
    store, shared = FakeStore(5), FakeShared()
    session, sent, task = await _synced(store, shared)
    wires: list[bytes] = []
    session.direct = lambda w: not wires.append(w)  # type: ignore[func-returns-value]
    session.notify_ops("b", 6)
    await _until(lambda: session.phase is Phase.ENROLLED and not session._busy)
    before = len(sent)
    assert session.write_live(5, frozenset({"b"}), b"frame", 1, 6)
    assert session.phase is Phase.AT_CHECKPOINT and session.position == 6 and wires == [b"frame"]
    assert len(sent) == before
    await _end(session, task)


async def test_without_shared_reads_new_ops_are_read_by_the_session() -> None:
    store = FakeStore(5)
    session, sent, task = await _synced(store, None)
    store.ops.append((6, "b", "put", "account", "r5", 1, {"i": 5}))
    session.notify_ops("b", 6)
    await _until(lambda: session.position == 6 and not session._busy)
    assert Phase.ENROLLED not in session.seen
    assert session.seen[-2:] == [Phase.CATCHING_UP, Phase.AT_CHECKPOINT]
    assert isinstance(sent[-2], p.Ops) and isinstance(sent[-1], p.Checkpoint)
    await _end(session, task)
