"""Limits answer with error frames and keep the connection; malformed frames (fuzzed) never
crash the gateway or disturb another device."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from offsync_device import Device, LocalStore
from offsync_shared import protocol as p
from offsync_stack.testing import eventually
from sync_service.limits import TokenBucket

pytestmark = pytest.mark.e2e


async def session(gw: Any, user: str, device: str | None = None) -> Any:
    ws = await connect(
        gw.url,
        additional_headers={"Authorization": f"Bearer {gw.token(user)}"},
        compression=None,
        max_size=None,
        ping_interval=None,
    )
    await ws.send(p.encode(p.Hello(device_id=device or str(uuid.uuid4()))))
    await next_of(ws, p.Checkpoint)
    return ws


async def next_of(ws: Any, kind: type, timeout: float = 10.0, skip_pings: bool = True) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            f = p.decode_server(await ws.recv())
            if isinstance(f, kind):
                return f


async def alive(ws: Any, t: float = 42.0) -> list[p.Error]:
    """Ping and wait for its pong; returns the error frames that came before it."""
    await ws.send(p.encode(p.Ping(t=t)))
    errors: list[p.Error] = []
    async with asyncio.timeout(10):
        while not isinstance(got := p.decode_server(await ws.recv()), p.Pong) or got.t != t:
            if isinstance(got, p.Error):
                errors.append(got)
    return errors


def upload(n: int, batch_id: str | None = None) -> bytes:
    return p.encode(
        p.Upload(
            batch_id=batch_id or str(uuid.uuid4()),
            changes=tuple(
                p.Change(seq=i, op="create", entity="task", id=str(uuid.uuid4()), fields={"i": i}) for i in range(n)
            ),
        )
    )


@pytest.fixture
async def user(gw: Any) -> str:
    uid = await gw.user()
    await gw.subscribe(uid, f"b-{uid}")
    return uid


async def test_frame_over_the_soft_cap_gets_an_error_frame(gw: Any, user: str) -> None:
    ws = await session(gw, user)
    await ws.send(orjson.dumps({"type": "ping", "pad": "x" * (gw.settings.sync_max_frame_bytes + 10)}))
    err = await next_of(ws, p.Error)
    assert err.code == p.ERR_FRAME_TOO_LARGE
    await alive(ws)
    await ws.close()


async def test_frame_over_the_hard_cap_closes_1009(gw: Any, user: str) -> None:
    ws = await session(gw, user)
    await ws.send(b"x" * (gw.settings.sync_hard_frame_bytes + 1))
    with pytest.raises(ConnectionClosed):
        await next_of(ws, p.Pong)
    assert ws.close_code == p.CLOSE_TOO_BIG


async def test_batch_over_max_changes_gets_an_error_frame(gw: Any, user: str) -> None:
    ws = await session(gw, user)
    bid = str(uuid.uuid4())
    await ws.send(upload(gw.settings.sync_max_changes + 1, bid))
    err = await next_of(ws, p.Error)
    assert err.code == p.ERR_BATCH_TOO_LARGE and err.ref == bid and not err.retriable
    await ws.send(upload(gw.settings.sync_max_changes))
    result = await next_of(ws, p.Result)
    assert len(result.results) == gw.settings.sync_max_changes
    await ws.close()


async def test_message_rate_per_device_gets_rate_limited_error_not_a_close(gw: Any, user: str) -> None:
    ws = await session(gw, user)
    for _ in range(gw.settings.sync_frame_burst + 20):
        await ws.send(p.encode(p.Ping()))
    err = await next_of(ws, p.Error)
    assert err.code == p.ERR_RATE_LIMITED and err.retriable and err.retry_after and err.retry_after > 0
    await asyncio.sleep(err.retry_after)  # honour the server's retry_after, as a device must
    await alive(ws)
    await ws.close()


async def test_too_many_batches_awaiting_answers(gw: Any, user: str) -> None:
    ws = await session(gw, user)
    gw.responder.hold = True
    try:
        ids = [str(uuid.uuid4()) for _ in range(gw.settings.sync_max_pending_batches + 1)]
        for bid in ids:
            await ws.send(upload(1, bid))
        err = await next_of(ws, p.Error)
        assert err.code == p.ERR_RATE_LIMITED and err.ref == ids[-1]
    finally:
        gw.responder.hold = False
    await ws.close()


async def test_server_heartbeat_and_pong(gw: Any, user: str) -> None:
    ws = await session(gw, user)
    ping = await next_of(ws, p.Ping, timeout=gw.settings.sync_heartbeat_s * 3)
    await ws.send(p.encode(p.Pong(t=ping.t)))
    await alive(ws)
    await ws.close()


def junk_frames(rng: random.Random) -> list[bytes | str]:
    """Malformed frames: wrong types, unknown ops/types, invalid JSON, binary junk, deep nesting."""
    valid_change = {"seq": 0, "op": "create", "entity": "task", "id": "x", "fields": {}}
    out: list[bytes | str] = [
        "",
        "null",
        "[]",
        "42",
        '"hello"',
        "{",
        '{"type": 1}',
        '{"type": "nope"}',
        '{"type": "hello"}',
        '{"type": "hello", "device_id": "d"}',
        '{"type": "refetch"}',
        '{"type": "refetch", "buckets": "b"}',
        '{"type": "refetch", "buckets": ["not-mine"]}',
        '{"type": "auth"}',
        '{"type": "auth", "token": "forged"[:0]}',
        '{"type": "upload"}',
        '{"type": "upload", "batch_id": "b", "changes": {}}',
        '{"type": "ping", "t": "x"}',
        "[" * 5000 + "]" * 5000,
        '{"type": "ops", "ops": []}',
        b"\x00\xff\xfe" * 100,
        bytes(range(256)),
        "\ud7ff" * 10,
    ]
    cases: list[tuple[str, Any]] = [
        ("op", "merge"),
        ("op", None),
        ("seq", -1),
        ("seq", "1"),
        ("seq", True),
        ("id", ""),
        ("id", "x" * 1000),
        ("entity", 5),
        ("fields", []),
        ("base_version", "v"),
    ]
    for field, bad in cases:
        ch = dict(valid_change, **{field: bad})
        out.append(orjson.dumps({"type": "upload", "batch_id": str(uuid.uuid4()), "changes": [ch]}))
    out.append(orjson.dumps({"type": "upload", "batch_id": "dup", "changes": [valid_change, valid_change]}))
    out.append(orjson.dumps({"type": "upload", "batch_id": "u", "changes": [dict(valid_change, op="update")]}))
    for _ in range(150):
        base = bytearray(
            orjson.dumps(
                {
                    "type": rng.choice(["upload", "hello", "refetch", "ping", "auth"]),
                    "batch_id": "b",
                    "changes": [valid_change],
                    "buckets": ["x"],
                }
            )
        )
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(base))
            base[i] = rng.randrange(256)
        out.append(bytes(base))
    rng.shuffle(out)
    return out


async def test_fuzzed_frames_never_crash_the_gateway_or_disturb_another_device(gw: Any, user: str) -> None:
    bystander = await gw.user()
    bucket = f"b-{bystander}"
    await gw.subscribe(bystander, bucket)
    await gw.put(bucket, "account", {"by-1": {"v": 0}})
    store = LocalStore()
    device = Device(gw.url, store, gw.token(bystander))
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _has(store, "by-1"), timeout=10)
    device_id = str(uuid.uuid4())
    ws = await session(gw, user, device_id)
    victim = next(s for s in gw.gateway.sessions if s.device_id == device_id)
    victim._limiter = TokenBucket(1e6, 1e6)  # fuzz the decoder, not the rate limit
    frames = junk_frames(random.Random(1234))
    for f in frames:
        await ws.send(f)
    # Still connected, still answering. A turn's errors follow its pong, and a later turn starts
    # only after they were sent, so the second pong closes the count (no quiet period to guess).
    seen = [*await alive(ws, 42.0), *await alive(ws, 43.0)]
    for err in seen:
        assert err.code in p.ERROR_CODES
    errors = len(seen)
    assert errors >= 16  # the error list is bounded (16 kept); the rest were not buffered
    await ws.close()
    op = await gw.put(bucket, "account", {"by-1": {"v": 1}})
    await gw.notify({bucket: op})
    await eventually(lambda: _val(store, {"v": 1}), timeout=10, message="bystander still served")
    stop.set()
    await run
    assert device.report.errors == []


async def _has(store: LocalStore, rid: str) -> bool:
    return store.get("account", rid) is not None


async def _val(store: LocalStore, want: Any) -> bool:
    return store.get("account", "by-1") == want


async def test_broker_loss_asks_the_device_to_resend_unanswered_batches(gw: Any, user: str) -> None:
    """The broker forgot what it held (embedded broker restart): a batch forwarded but not answered
    may be gone, so the device is asked to resend it (same id) instead of waiting for ever."""
    ws = await session(gw, user)
    gw.responder.hold = True
    try:
        bid = str(uuid.uuid4())
        await ws.send(upload(1, bid))

        async def forwarded() -> bool:
            return any(bid in s.pending for s in gw.gateway.sessions)

        await eventually(forwarded, timeout=10, message="batch forwarded")
        assert await gw.gateway.hub.resend_unanswered() == 1
        err = await next_of(ws, p.Error)
        assert err.code == p.ERR_UNAVAILABLE and err.ref == bid and err.retriable
        assert not await forwarded()
    finally:
        gw.responder.hold = False
    await ws.close()


async def test_a_batch_never_answered_is_asked_again(gw: Any, user: str) -> None:
    """A batch lost on its way (nothing stored for it long after it was forwarded) is not waited on
    for ever: the device is asked to resend it, and the resent one is answered."""
    ws = await session(gw, user)
    gw.responder.lose = True
    resend_s = gw.settings.sync_result_resend_s
    gw.settings.sync_result_resend_s = gw.settings.sync_result_recheck_s
    try:
        bid = str(uuid.uuid4())
        await ws.send(upload(1, bid))
        err = await next_of(ws, p.Error, timeout=gw.settings.sync_result_recheck_s * 4 + 5)
        assert err.code == p.ERR_UNAVAILABLE and err.ref == bid and err.retriable
    finally:
        gw.responder.lose = False
        gw.settings.sync_result_resend_s = resend_s
    await ws.send(upload(1, bid))
    res = await next_of(ws, p.Result)
    assert res.batch_id == bid and [r.status for r in res.results] == ["applied"]
    await ws.close()
