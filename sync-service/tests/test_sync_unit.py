"""Pure parts of the gateway: the access decision, the token bucket, and the session generator
driven against an in-memory bucket store (no network, no database)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared import protocol as p
from offsync_shared.auth import Principal
from offsync_shared.checksum import MOD, op_hash
from sync_service import device_access
from sync_service.bucket_reads import Admission, BucketState, LiveBatch, OpsPage, StoredBatch
from sync_service.device_access import AccessFacts, decide
from sync_service.limits import ComeBackSlots, TokenBucket
from sync_service.metadata import describe_entity, primary_attribute
from sync_service.session import Close, SyncSession
from sync_service.settings import Settings

ACCESS = [
    ("ok", AccessFacts(True, True, True, "p", 1), None),
    ("unknown-user", AccessFacts(False, False, False, None, None), p.CLOSE_FORBIDDEN),
    ("disabled", AccessFacts(True, False, True, "p", 1), p.CLOSE_FORBIDDEN),
    ("no-privilege", AccessFacts(True, True, False, "p", 1), p.CLOSE_FORBIDDEN),
    ("no-profile", AccessFacts(True, True, True, None, None), p.CLOSE_NO_PROFILE),
    ("disabled-wins-over-no-profile", AccessFacts(True, False, True, None, None), p.CLOSE_FORBIDDEN),
]


@pytest.mark.parametrize("facts,code", [a[1:] for a in ACCESS], ids=[a[0] for a in ACCESS])
def test_access_decision(facts: AccessFacts, code: int | None) -> None:
    refusal = decide(facts)
    assert (refusal.close_code if refusal else None) == code


def test_device_mismatch() -> None:
    assert device_access.device_mismatch(None, "d") is None
    assert device_access.device_mismatch("d", "d") is None
    assert device_access.device_mismatch("e", "d").close_code == p.CLOSE_FORBIDDEN  # type: ignore[union-attr]


@given(st.lists(st.floats(0, 10), min_size=1, max_size=50))
def test_token_bucket_never_exceeds_rate_plus_burst(gaps: list[float]) -> None:
    tb = TokenBucket(rate=5, burst=3, updated=0.0)
    now, taken = 0.0, 0
    for g in gaps:
        now += g
        taken += tb.take(now)
    assert taken <= 3 + 5 * now + 1e-9


@given(st.lists(st.tuples(st.floats(0, 2), st.floats(0, 100)), min_size=1, max_size=60))
def test_come_back_slots_are_spaced_at_the_rate_within_bounds(steps: list[tuple[float, float]]) -> None:
    """Refused clients are told a time never before the earliest they may come and never beyond
    the horizon; short of the horizon, at least 1/rate after every time handed out before."""
    slots, now, latest = ComeBackSlots(rate=100.0, horizon=30.0), 0.0, float("-inf")
    for gap, earliest in steps:
        now += gap
        wait = slots.wait(now, earliest)
        assert min(earliest, 30.0) - 1e-9 <= wait <= 30.0 + 1e-9
        if wait < 30.0 - 1e-9:
            assert now + wait >= latest + 0.01 - 1e-9
        latest = max(latest, now + wait)


def test_a_refused_crowd_is_spread_over_what_the_bucket_admits() -> None:
    slots = ComeBackSlots(rate=500.0)
    waits = [slots.wait(10.0, 0.05) for _ in range(1000)]
    assert waits[0] == pytest.approx(0.05) and waits[-1] == pytest.approx(0.05 + 999 / 500)


# Gateway CPU per reconnect measured by the reconnect workload: ~1.1 ms on a quiet machine,
# up to ~1.7 ms on a saturated one (docs/performance.md, "reconnect").
RECONNECT_CPU_S_BUSY = 0.0017


def test_default_connection_cap_admits_a_fleet_storm_the_gateway_can_serve() -> None:
    """The cap protects the gateway from a reconnect storm without making one slower than the
    gateway itself: the storm admitted at once (the burst) is served well inside the hello
    timeout even on a busy box, the refill is no faster than one core serves reconnects, and
    a fleet of 2,000 (the reconnect workload's) is admitted at once, the 2,001st is refused."""
    s = Settings()
    assert s.sync_conn_burst * RECONNECT_CPU_S_BUSY < s.sync_hello_timeout_s / 2
    assert s.sync_conn_rate * RECONNECT_CPU_S_BUSY <= 2.0  # at most the machine's two cores
    cap = TokenBucket(s.sync_conn_rate, s.sync_conn_burst, updated=0.0)
    assert all(cap.take(0.0) for _ in range(2000))
    assert not cap.take(0.0)
    assert cap.take(1.0 / s.sync_conn_rate)


def test_gateway_pure_modules_import_no_adapters() -> None:
    root = Path(device_access.__file__).parent
    for name in ("device_access.py", "limits.py", "session.py"):
        tree = ast.parse((root / name).read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m.split(".")[0] for m in mods} & {"aiokafka", "asyncpg", "fastapi", "starlette", "websockets"}, name


class FakeStore:
    """In-memory BucketStore: one bucket log, counts how many pages were read."""

    def __init__(self, n: int) -> None:
        self.ops = [(i + 1, "b", "put", "account", f"r{i}", 1, {"i": i}) for i in range(n)]
        self.pages_read = 0

    async def access(self, user_id: str) -> AccessFacts:
        return AccessFacts(True, True, True, "p", 1)

    async def admit(self, user_id: str, session_id: str | None = None) -> Admission:
        return Admission(
            await self.access(user_id), frozenset(await self.user_buckets(user_id)), await self.newest_op_id()
        )

    async def user_buckets(self, user_id: str) -> set[str]:
        return {"b"}

    async def bucket_states(self, user_id: str, buckets: list[str]) -> dict[str, BucketState]:
        return {"b": BucketState(sum(op_hash(o[3], o[4], o[5]) for o in self.ops) % MOD, len(self.ops))}

    async def newest_op_id(self) -> int:
        return len(self.ops)

    async def count_ops(self, user_id: str, buckets: list[str], after: int) -> int:
        return sum(1 for o in self.ops if o[0] > after)

    async def ops_page(self, user_id: str, buckets: list[str], after: Any, limit: int) -> OpsPage:
        self.pages_read += 1
        start = after if isinstance(after, int) else after[0]
        rows = [o for o in self.ops if o[0] > start][:limit]
        last = (rows[-1][0], "b", "account", rows[-1][4]) if rows else None
        return OpsPage(orjson.Fragment(orjson.dumps(rows)), len(rows), last, await self.bucket_states(user_id, buckets))

    async def stored_batch(self, batch_id: str) -> StoredBatch | None:
        return None

    async def entity_metadata(self, user_id: str) -> list[dict[str, Any]]:
        return [describe_entity("account", "Account", {"name": {"type": "string", "required": True}})]

    # The rest of BucketStore: paths these unit tests never take.
    async def live_batch(self, buckets: list[str], users: list[str], after: int, limit: int) -> LiveBatch:
        raise NotImplementedError

    async def app_profiles(self, app: str) -> frozenset[str] | None:
        return None

    async def newest_ops(self, buckets: list[str]) -> dict[str, int]:
        return {"b": len(self.ops)} if "b" in buckets else {}


class NullRegistry:
    def register(self, s: Any) -> None: ...
    def unregister(self, s: Any) -> None: ...
    def resubscribe(self, s: Any, removed: set[str], added: set[str]) -> None: ...
    def expect(self, batch_id: str, s: Any) -> None: ...


class NullPublisher:
    async def upload(self, batch: Any) -> None: ...


def make_session(
    store: FakeStore, cursor: int = 0, checksums: dict[str, int] | None = None, features: tuple[str, ...] = ()
) -> SyncSession:
    settings = Settings(env="test", sync_page_size=100, sync_heartbeat_s=60, sync_idle_timeout_s=120)
    return SyncSession(
        principal=Principal("u", "offsync-device", 4e9, None),
        hello=p.Hello("d", cursor=cursor, checksums=checksums or {}, features=features),
        store=store,
        registry=NullRegistry(),
        publisher=NullPublisher(),
        settings=settings,
        verify_token=lambda t: None,  # type: ignore[arg-type,return-value]
    )


async def test_session_produces_one_page_per_frame_taken() -> None:
    """Backpressure: the generator reads the next page only when the transport takes a frame."""
    store = FakeStore(1000)
    stream = make_session(store).run()
    assert isinstance(await anext(stream), p.Welcome)
    first = await anext(stream)
    assert isinstance(first, p.Ops) and first.done == 100 and first.total == 1000 and first.resume == 99
    assert store.pages_read == 1
    await asyncio.sleep(0.05)  # a slow device: nothing more is produced meanwhile
    assert store.pages_read == 1
    frames = [await anext(stream) for _ in range(10)]
    assert isinstance(frames[-1], p.Checkpoint) and frames[-1].cursor == 1000
    assert isinstance(frames[-2], p.Ops) and frames[-2].done == frames[-2].total == 1000
    await stream.aclose()


async def test_a_combined_download_sends_each_page_the_count_says_is_not_the_last_at_once() -> None:
    """With ops_checkpoint only a page that may be the last waits for the next read (a checkpoint
    may ride on it): the first page of a download leaves after one page read, not two."""
    store = FakeStore(250)
    stream = make_session(store, features=(p.FEATURE_OPS_CHECKPOINT,)).run()
    assert isinstance(await anext(stream), p.Welcome)
    first = await anext(stream)
    assert isinstance(first, p.Ops) and (first.done, first.total, first.checkpoint) == (100, 250, None)
    assert store.pages_read == 1
    second = await anext(stream)
    assert isinstance(second, p.Ops) and second.done == 200 and store.pages_read == 2
    last = await anext(stream)
    assert isinstance(last, p.Ops) and last.done == 250 and store.pages_read == 3
    assert last.checkpoint is not None and last.checkpoint.cursor == 250
    await stream.aclose()


async def test_session_resumes_from_cursor_and_closes_on_token_expiry() -> None:
    store = FakeStore(250)
    session = make_session(store, cursor=200, checksums={"b": 12345})  # b not complete at 200: not judged
    stream = session.run()
    out = [await anext(stream) for _ in range(3)]
    assert isinstance(out[1], p.Ops) and out[1].done == 50
    assert isinstance(out[2], p.Checkpoint) and out[2].cursor == 250
    session.expires_at = 0.0  # the token runs out while the device idles
    session._signal.set()
    closing = await anext(stream)
    assert isinstance(closing, Close) and closing.code == p.CLOSE_UNAUTHENTICATED


async def _idle_session(store: FakeStore) -> tuple[SyncSession, list[Any], asyncio.Task[None]]:
    """A session resumed at the store's newest op with the right checksum: synced and asleep."""
    states = await store.bucket_states("u", ["b"])
    session = make_session(store, cursor=len(store.ops), checksums={"b": states["b"].checksum})
    sent: list[Any] = []

    async def pump() -> None:
        async for f in session.run():
            sent.append(f)

    task = asyncio.create_task(pump())
    for _ in range(100):  # a few loop turns until the stream waits; no timing involved
        if session.live_eligible():
            break
        await asyncio.sleep(0)
    assert session.live_eligible()
    return session, sent, task


async def test_live_frames_go_straight_to_the_socket_only_while_the_session_sleeps() -> None:
    store = FakeStore(5)
    session, sent, task = await _idle_session(store)
    wires: list[bytes] = []
    room = True
    session.direct = lambda w: room and not wires.append(w)  # type: ignore[func-returns-value]
    mine = frozenset(session.buckets)
    # moved meanwhile (another position) or other buckets: not ours to take
    assert not session.write_live(4, mine, b"x", 1, 6)
    assert not session.write_live(5, frozenset({"other"}), b"x", 1, 6)
    # the socket is full (kernel buffer above its high-water mark): the caller sends the usual way
    room = False
    assert not session.write_live(5, mine, b"x", 1, 6) and session.position == 5
    room = True
    before = len(sent)
    assert session.write_live(5, mine, b"frame", 1, 6)
    assert wires == [b"frame"] and session.position == 6 and session.sent_ops == 1
    await asyncio.sleep(0)
    assert len(sent) == before, "nothing went through the session's own stream"
    # notified of a newer op while that frame was being built: the hub enrols it again
    session.ask(9)
    assert session.enrolled() and session.behind()
    session.disconnected()
    await task


async def test_no_direct_write_without_a_transport_that_offers_it() -> None:
    session, _, task = await _idle_session(FakeStore(3))
    assert session.direct is None and not session.write_live(3, frozenset(session.buckets), b"x", 1, 4)
    session.disconnected()
    await task


async def test_entity_metadata_follows_welcome_only_for_devices_that_ask() -> None:
    """Backwards compatible: a device without the feature (the Python SDK) never sees the frame."""
    plain = make_session(FakeStore(3)).run()
    assert isinstance(await anext(plain), p.Welcome)
    assert isinstance(await anext(plain), p.Ops)
    await plain.aclose()
    asking = make_session(FakeStore(3), features=(p.FEATURE_ENTITY_METADATA,)).run()
    assert isinstance(await anext(asking), p.Welcome)
    meta = await anext(asking)
    assert isinstance(meta, p.Metadata)
    assert meta.entities[0]["name"] == "account" and meta.entities[0]["primary_attribute"] == "name"
    assert p.decode_server(p.encode(meta)) == meta
    await asking.aclose()


@pytest.mark.parametrize(
    ("attributes", "primary"),
    [
        ({"name": {"type": "string"}, "city": {"type": "string", "required": True}}, "name"),
        ({"subject": {"type": "string", "required": True}, "n": {"type": "int"}}, "subject"),
        ({"b": {"type": "string"}, "code": {"type": "string", "required": True}}, "code"),
        ({"b": {"type": "string"}, "a": {"type": "string"}}, "a"),
        ({"n": {"type": "int"}}, None),
        ({}, None),
    ],
)
def test_primary_attribute(attributes: dict[str, Any], primary: str | None) -> None:
    assert primary_attribute(attributes) == primary


def test_describe_entity_passes_unknown_spec_keys_through() -> None:
    d = describe_entity("x", "X", {"a": {"type": "choice", "options": [1, 2], "future_key": True}, "bad": 5})
    assert d["attributes"] == {"a": {"type": "choice", "options": [1, 2], "future_key": True}}


async def _turn(session: SyncSession) -> list[Any]:
    return [f async for f in session.turn()]


async def test_a_parked_session_has_no_task_and_is_woken_once_per_park() -> None:
    """The lean transport's way: turns run until idle, then the session is parked (plain state);
    a frame, a notification or the alarm calls the wake-up once, which runs the next turn."""
    store = FakeStore(3)
    states = await store.bucket_states("u", ["b"])
    session = make_session(store, cursor=3, checksums={"b": states["b"].checksum})
    first = await _turn(session)
    assert isinstance(first[0], p.Welcome) and isinstance(first[-1], p.Checkpoint)
    assert not session.over and session.live_eligible()  # idle at a checkpoint: live may bypass it
    wakes: list[int] = []
    assert session.park(lambda: wakes.append(1))
    assert session.alarm_tick > 0  # the heartbeat's alarm is set
    session.feed(p.encode(p.Ping(t=7)))
    session.feed(p.encode(p.Ping(t=8)))
    assert wakes == [1], "woken once, however many frames came"
    session.unpark()
    assert session.alarm_tick == 0
    assert [f.t for f in await _turn(session) if isinstance(f, p.Pong)] == [7, 8]
    # A wake-up that came before parking: nothing is parked, the caller runs a turn at once.
    session.notify_rebucket()
    assert not session.park(lambda: wakes.append(2)) and wakes == [1]
    await _turn(session)
    # Revoked while parked: the next turn ends the session with the close.
    assert session.park(lambda: wakes.append(3))
    session.revoke(p.CLOSE_FORBIDDEN, "revoked", drop=False)
    assert wakes == [1, 3]
    session.unpark()
    out = await _turn(session)
    assert isinstance(out[-1], Close) and out[-1].code == p.CLOSE_FORBIDDEN and session.over
    assert not session.park(lambda: wakes.append(4))  # over: never parked again
    session.end()
    session.end()  # idempotent
    assert wakes == [1, 3]
