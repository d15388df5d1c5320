"""Who may connect: every refusal closes with its documented code and a readable reason."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from offsync_device import Backoff, Device, LocalStore
from offsync_shared import auth
from offsync_shared import protocol as p
from sync_service.limits import ComeBackSlots, TokenBucket

pytestmark = pytest.mark.e2e


async def close_of(gw: Any, *, header: str | None, first: bytes | str | None) -> tuple[int | None, str]:
    headers = {"Authorization": header} if header else None
    async with connect(gw.url, additional_headers=headers, compression=None, ping_interval=None) as ws:
        try:
            if first is not None:
                await ws.send(first)
            while True:
                frame = p.decode_server(await ws.recv())
                if isinstance(frame, p.Welcome):
                    return None, "welcome"
        except ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""


def hello(device: str = "dev-1", token: str | None = None) -> bytes:
    return p.encode(p.Hello(device_id=device, token=token))


CASES = [
    # id, user kind, token kind, first frame kind, expected close code, reason fragment
    ("no-token", "ok", "none", "hello", p.CLOSE_UNAUTHENTICATED, "missing bearer token"),
    ("forged", "ok", "forged", "hello", p.CLOSE_UNAUTHENTICATED, "invalid token"),
    ("expired", "ok", "expired", "hello", p.CLOSE_UNAUTHENTICATED, "expired"),
    ("admin-audience", "ok", "admin", "hello", p.CLOSE_UNAUTHENTICATED, "audience"),
    ("malformed-header", "ok", "basic", "hello", p.CLOSE_UNAUTHENTICATED, "Bearer"),
    ("unknown-user", "unknown", "good", "hello", p.CLOSE_FORBIDDEN, "unknown user"),
    ("disabled", "disabled", "good", "hello", p.CLOSE_FORBIDDEN, "disabled"),
    ("no-offline-privilege", "no-privilege", "good", "hello", p.CLOSE_FORBIDDEN, "read_offline_profile"),
    ("no-profile", "no-profile", "good", "hello", p.CLOSE_NO_PROFILE, "no published"),
    ("other-device", "ok", "other-device", "hello", p.CLOSE_FORBIDDEN, "another device"),
    ("first-frame-not-hello", "ok", "good", "ping", p.CLOSE_BAD_HELLO, "first frame must be hello"),
    ("first-frame-not-json", "ok", "good", "junk", p.CLOSE_BAD_HELLO, "not valid JSON"),
    ("no-hello-in-time", "ok", "good", "nothing", p.CLOSE_TIMEOUT, "no hello"),
    ("accepted", "ok", "good", "hello", None, "welcome"),
    ("accepted-token-in-hello", "ok", "in-hello", "hello", None, "welcome"),
    ("accepted-privilege-via-team", "team", "good", "hello", None, "welcome"),
]


@pytest.mark.parametrize("user_kind,token_kind,first,code,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_refusals(gw: Any, user_kind: str, token_kind: str, first: str, code: int | None, reason: str) -> None:
    if user_kind == "unknown":
        user = f"ghost-{uuid.uuid4().hex[:6]}"
    else:
        user = await gw.user(
            enabled=user_kind != "disabled",
            offline=user_kind != "no-privilege",
            profile=user_kind != "no-profile",
            via_team=user_kind == "team",
        )
    tokens = {
        "none": None,
        "forged": gw.token(user, secret="x" * 40),
        "expired": gw.token(user, now=time.time() - 7200, ttl=60),
        "admin": gw.token(user, audience=auth.ADMIN_AUDIENCE),
        "good": gw.token(user, device_id="dev-1"),
        "other-device": gw.token(user, device_id="dev-2"),
        "in-hello": gw.token(user),
        "basic": "x",
    }
    token = tokens[token_kind]
    header = (
        None
        if token is None or token_kind == "in-hello"
        else (f"Bearer {token}" if token_kind != "basic" else "Basic abc")
    )
    frames = {
        "hello": hello(token=token if token_kind == "in-hello" else None),
        "ping": p.encode(p.Ping()),
        "junk": "{nope",
        "nothing": None,
    }
    got_code, got_reason = await close_of(gw, header=header, first=frames[first])
    assert got_code == code
    assert reason in got_reason


async def test_connection_rate_cap_refuses_with_retry_hint_and_sdk_backs_off(gw: Any) -> None:
    """Failure mode 6: a reconnect storm meets a per-process connection-rate cap (1013 with
    retry_after); the SDK waits at least that long, with jitter, and gets in."""
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    original = gw.gateway.conn_limiter, gw.gateway.come_back
    # Practically no refill while the 8 connect (a loaded machine made a 5/s refill admit a 4th).
    gw.gateway.conn_limiter = TokenBucket(rate=1e-6, burst=3.0, updated=time.monotonic())
    try:
        codes = []
        for _ in range(8):
            c, r = await close_of(gw, header=f"Bearer {gw.token(user)}", first=hello(device=str(uuid.uuid4())))
            codes.append(c)
            if c == p.CLOSE_TRY_AGAIN_LATER:
                assert "retry_after=" in r
        assert codes.count(None) == 3 and codes.count(p.CLOSE_TRY_AGAIN_LATER) == 5
        # Empty now, refilling at 5/s: the SDK is refused first and gets in after its back-off.
        gw.gateway.conn_limiter = TokenBucket(rate=5.0, burst=1.0, tokens=0.0, updated=time.monotonic())
        gw.gateway.come_back = ComeBackSlots(5.0)
        device = Device(gw.url, LocalStore(), gw.token(user), backoff=Backoff(base=0.05, cap=0.5))
        report = await device.sync(timeout=15)
        assert report.checkpoints == 1
    finally:
        gw.gateway.conn_limiter, gw.gateway.come_back = original


@pytest.mark.parametrize(
    "app,code,reason",
    [
        (None, None, "welcome"),  # no app named: devices that predate app modules keep working
        ("field-app", None, "welcome"),  # by id
        ("Field Service", None, "welcome"),  # by name
        ("sales-app", p.CLOSE_APP_NOT_AVAILABLE, "not attached to app module"),
        ("offline-off", p.CLOSE_APP_NOT_AVAILABLE, "no app module"),
        ("no-such-app", p.CLOSE_APP_NOT_AVAILABLE, "no app module"),
    ],
    ids=["no-app", "app-id", "app-name", "profile-not-attached", "app-not-offline", "unknown-app"],
)
async def test_app_modules_decide_which_profile_a_device_gets(
    gw: Any, app: str | None, code: int | None, reason: str
) -> None:
    """Bug #14.6: the hello names the device's app; the user's profile must be attached to that
    offline-enabled app module, else the device is refused with close 4006."""
    async with gw.pool.acquire() as c:
        await c.execute(
            """INSERT INTO admin.profiles(id, name) VALUES ('p1', 'Field'), ('p2', 'Sales') ON CONFLICT DO NOTHING;
               INSERT INTO admin.app_modules(id, name, offline_enabled) VALUES ('field-app', 'Field Service', true),
                      ('sales-app', 'Sales Hub', true), ('offline-off', 'Desk', false) ON CONFLICT DO NOTHING;
               INSERT INTO admin.app_module_profiles VALUES ('field-app', 'p1'), ('sales-app', 'p2'), ('offline-off', 'p1')
                      ON CONFLICT DO NOTHING"""
        )
    user = await gw.user()  # profile p1
    first = p.encode(p.Hello(device_id="dev-1", app=app))
    got_code, got_reason = await close_of(gw, header=f"Bearer {gw.token(user, device_id='dev-1')}", first=first)
    assert (got_code, reason in got_reason) == (code, True), got_reason


async def test_welcome_carries_the_profiles_sync_intervals(gw: Any) -> None:
    """Bug #14.6: each item's sync_interval_minutes reaches the device, which syncs each entity
    at least that often in background mode (offsync_device.background)."""
    user = await gw.user()  # profile p1
    items = [
        {"entity": "account", "filter": {"kind": "all"}, "relationships": [], "sync_interval_minutes": 60},
        {"entity": "contact", "filter": {"kind": "related"}, "relationships": [], "sync_interval_minutes": 15},
    ]
    async with gw.pool.acquire() as c:
        await c.execute(
            """INSERT INTO sync.published_profiles(profile_id, version, items) VALUES ('p1', 1, $1)
               ON CONFLICT (profile_id) DO UPDATE SET items = EXCLUDED.items""",
            items,
        )
    headers = {"Authorization": f"Bearer {gw.token(user, device_id='dev-1')}"}
    async with connect(gw.url, additional_headers=headers, compression=None, ping_interval=None) as ws:
        await ws.send(hello())
        welcome = p.decode_server(await ws.recv())
    assert isinstance(welcome, p.Welcome)
    assert welcome.sync_intervals == {"account": 60, "contact": 15}


async def test_devices_admitted_together_each_get_their_own_users_facts(gw: Any) -> None:
    """Admissions that arrive together are read by one statement (``_ADMIT_MANY``): each device
    gets exactly what its own read (``_ADMIT``) would give, whoever shares the statement."""
    from sync_service.bucket_reads import PgBucketStore

    ok = await gw.user()
    await gw.subscribe(ok, f"b-{ok}", "b-shared-admission")
    kinds = {
        "ok": ok,
        "team": await gw.user(via_team=True),
        "disabled": await gw.user(enabled=False),
        "no-privilege": await gw.user(offline=False),
        "no-profile": await gw.user(profile=False),
        "unknown": f"ghost-{uuid.uuid4().hex[:6]}",
    }
    family = f"fam-{uuid.uuid4().hex[:8]}"
    await gw.pool.execute(
        "INSERT INTO admin.refresh_tokens(id, family_id, user_id, generation, audience, token_hash, expires_at, revoked_at) "
        "SELECT $1, $2, $3, coalesce(generation, ''), 'device', $4, now() + interval '1 hour', now() "
        "FROM admin.users WHERE id = $3",
        f"rt-{family}",
        family,
        ok,
        uuid.uuid4().bytes,
    )
    requests = [(uid, None) for uid in kinds.values()] + [(ok, family), (ok, "fam-not-revoked")]
    store = PgBucketStore(gw.pool)
    together = await asyncio.gather(*(store.admit(u, s) for u, s in requests))
    alone = [await store.admit_one(u, s) for u, s in requests]
    assert together == alone
    by_kind = dict(zip(kinds, together, strict=False))
    assert by_kind["ok"].buckets == {f"b-{ok}", "b-shared-admission"}
    assert set(by_kind["ok"].states or {}) == {f"b-{ok}", "b-shared-admission"}
    assert not by_kind["unknown"].facts.user_exists and not by_kind["disabled"].facts.enabled
    assert together[-2].facts.session_revoked and not together[-1].facts.session_revoked
