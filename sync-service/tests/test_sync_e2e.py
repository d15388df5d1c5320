"""End to end over real websockets: a gateway on a free port, a real database and broker, and
devices driven through the SDK (or a raw client where the test needs byte-level control)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect

from offsync_device import Device, LocalStore
from offsync_device.client import SyncRefused
from offsync_shared import ops_hint
from offsync_shared import protocol as p
from offsync_stack.testing import eventually

pytestmark = pytest.mark.e2e


def recs(n: int, prefix: str = "a", **extra: Any) -> dict[str, dict[str, Any]]:
    return {f"{prefix}-{i:05d}": {"name": f"{prefix} {i}", "n": i, **extra} for i in range(n)}


async def raw_client(
    gw: Any,
    user: str,
    *,
    device: str | None = None,
    cursor: int = 0,
    checksums: dict[str, int] | None = None,
    token: str | None = None,
    features: tuple[str, ...] = (),
) -> Any:
    ws = await connect(
        gw.url,
        additional_headers={"Authorization": f"Bearer {token or gw.token(user)}"},
        compression=None,
        max_size=None,
        ping_interval=None,
    )
    hello = p.Hello(device_id=device or str(uuid.uuid4()), cursor=cursor, checksums=checksums or {}, features=features)
    await ws.send(p.encode(hello))
    return ws


async def until(ws: Any, kind: type, timeout: float = 10.0) -> Any:
    """Read frames until one of ``kind`` arrives; returns (frame, frames seen before it)."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            f = p.decode_server(await ws.recv())
            if isinstance(f, kind):
                return f, seen
            seen.append(f)


async def test_initial_download_then_live_delta(gw: Any) -> None:
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}-1", f"b-{user}-2")
    await gw.put(f"b-{user}-1", "account", recs(1200, "acc"))
    await gw.put(f"b-{user}-2", "contact", recs(300, "con"))
    progress: list[tuple[int, int]] = []
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user), on_progress=lambda d, t: progress.append((d, t)))
    report = await device.sync(timeout=30)
    assert store.count("account") == 1200 and store.count("contact") == 300
    assert report.checkpoints >= 1 and report.cursor == store.cursor > 0
    assert progress[-1][0] == progress[-1][1] == 1500
    assert len(progress) >= 3, "downloaded in bounded pages"
    assert store.get("account", "acc-00007") == {"name": "acc 7", "n": 7}
    # live: stay connected, change one record server-side, it arrives via notify (no polling)
    stop = asyncio.Event()
    task = asyncio.create_task(device.run(stop))
    await eventually(lambda: _connected(gw, store.device_id()), timeout=10, message="device connected")
    t0 = time.perf_counter()
    op = await gw.put(f"b-{user}-1", "account", {"acc-00007": {"name": "renamed"}})
    await gw.notify({f"b-{user}-1": op})
    await eventually(
        lambda: _value(store, "account", "acc-00007", {"name": "renamed"}), timeout=10, message="live op stored"
    )
    assert time.perf_counter() - t0 < 5
    await eventually(lambda: _cursor_at(store, op), timeout=10, message="checkpoint after the live op")
    assert gw.gateway.hub.fanout.shared_deliveries > 0, "idle sessions are served by the shared live read"
    assert gw.gateway.hub.fanout.direct_deliveries > 0, "an idle session's live frame goes straight to its socket"
    stop.set()
    await task


async def test_a_live_change_announced_only_by_the_ops_hint(gw: Any) -> None:
    """publish-service's ops hint (a NOTIFY sent at its commit, offsync_shared.ops_hint) alone
    wakes the session: no BucketsAdvanced goes to the broker here, so this is the hint's path
    from the commit to the device."""
    if not gw.settings.kafka_doorbell:
        pytest.skip("the gateway hears ops hints on its doorbell's connection: embedded broker only")
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(3))
    ws = await raw_client(gw, user)
    await until(ws, p.Checkpoint)
    hints = gw.gateway.hub.hints
    op = await gw.put(bucket, "account", {"a-00001": {"name": "hinted"}})
    async with gw.pool.acquire() as c, c.transaction():
        await ops_hint.send(c, {bucket: op})
    ops, _ = await until(ws, p.Ops)
    assert [r[4] for r in ops.ops] == ["a-00001"]
    assert gw.gateway.hub.hints == hints + 1
    await ws.close()


async def test_live_change_is_one_frame_only_for_devices_that_ask(gw: Any) -> None:
    """ops_checkpoint: a device that names the feature gets ops + checkpoint in one frame, live
    and at the end of a catch-up; an older device (no features) still gets the two frames it
    understands, same content."""
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(3))
    old = await raw_client(gw, user)
    new = await raw_client(gw, user, features=(p.FEATURE_OPS_CHECKPOINT,))
    old_first, _ = await until(old, p.Ops)
    assert old_first.checkpoint is None
    old_cp, _ = await until(old, p.Checkpoint)
    first, _ = await until(new, p.Ops)
    assert first.checkpoint == old_cp and len(first.ops) == len(old_first.ops) == 3
    await eventually(lambda: _count_sessions(gw, 2), timeout=10)
    op = await gw.put(bucket, "account", {"a-00001": {"name": "live"}})
    await gw.notify({bucket: op})
    ops, _ = await until(new, p.Ops)
    assert ops.checkpoint is not None and ops.checkpoint.cursor == op
    assert [r[4] for r in ops.ops] == ["a-00001"]
    old_ops, _ = await until(old, p.Ops)
    assert old_ops.checkpoint is None and [r[4] for r in old_ops.ops] == ["a-00001"]
    cp = p.decode_server(await asyncio.wait_for(old.recv(), 10))
    assert cp == ops.checkpoint
    for ws in (old, new):
        await ws.close()


async def _count_sessions(gw: Any, n: int) -> bool:
    return gw.gateway.hub.sessions >= n


async def _connected(gw: Any, device_id: str) -> bool:
    return any(did == device_id for _, did in gw.gateway.hub.by_device)


async def _value(store: LocalStore, entity: str, rid: str, want: Any) -> bool:
    return store.get(entity, rid) == want


async def _cursor_at(store: LocalStore, op: int) -> bool:
    return store.cursor >= op


async def test_offline_edits_then_reconnect_flushes_outbox_and_applies_results(gw: Any) -> None:
    """Failure modes 4 and 9: reconnect alone flushes the outbox; three quick offline updates of
    one record all reach the server."""
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    rows = recs(3, "off")
    await gw.put(bucket, "account", rows)
    async with gw.pool.acquire() as c:  # the server-side copy conflict-service would hold
        for rid, attrs in rows.items():
            await c.execute(
                "INSERT INTO data.records(entity, id, version, attributes) VALUES ('account', $1, 1, $2)", rid, attrs
            )
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    await device.sync(timeout=30)
    # offline now: three quick updates of one record, a create, a delete
    store.update("account", "off-00000", {"name": "one"})
    store.update("account", "off-00000", {"phone": "555"})
    store.update("account", "off-00000", {"name": "three"})
    new_id = store.create("account", {"name": "made offline"})
    store.delete("account", "off-00002")
    assert [c.op for c in store.pending()] == ["update", "create", "delete"]
    assert store.get("account", "off-00000") == {"name": "three", "n": 0, "phone": "555"}
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))  # no further local write: the reconnect flushes
    await eventually(lambda: _no_pending(store), timeout=15, message="outbox flushed on reconnect")
    stop.set()
    await run
    row = await gw.pool.fetchrow(
        "SELECT version, attributes FROM data.records WHERE entity = 'account' AND id = 'off-00000'"
    )
    assert row["attributes"] == {"name": "three", "n": 0, "phone": "555"} and row["version"] == 2
    assert await gw.pool.fetchval("SELECT count(*) FROM data.records WHERE id = $1", new_id) == 1
    assert await gw.pool.fetchval("SELECT deleted FROM data.records WHERE id = 'off-00002'") is True
    assert (store.server_record("account", "off-00000") or {}).get("version") == 2  # result applied locally
    assert device.report.problems == []


async def _no_pending(store: LocalStore) -> bool:
    return not store.has_pending()


async def test_conflict_result_replaces_local_record_and_is_logged(gw: Any) -> None:
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", {"c-1": {"name": "orig"}})
    await gw.pool.execute(
        "INSERT INTO data.records(entity, id, version, attributes) VALUES ('account', 'c-1', 3, $1)", {"name": "server"}
    )
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    await device.sync(timeout=30)
    store.update("account", "c-1", {"name": "mine"})  # based on version 1; server is at 3
    store.create("poison", {"x": 1})  # always rejected: must not block the rest (failure mode 3)
    report = await device.sync(timeout=30)
    statuses = sorted(r.status for r in report.problems)
    assert statuses == ["conflict", "rejected"]
    assert store.get("account", "c-1") == {"name": "server"}
    logged = store.conflicts()
    assert {c.status for c in logged} == {"conflict", "rejected"}
    assert not store.has_pending()


async def test_resent_batch_is_applied_once_and_answered_from_stored_results(gw: Any) -> None:
    """Failure mode 2: the answer is lost (device gone), the device resends the same batch id."""
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    device_id = str(uuid.uuid4())
    batch = p.Upload(
        batch_id=str(uuid.uuid4()),
        changes=(p.Change(seq=0, op="create", entity="task", id=str(uuid.uuid4()), fields={"t": 1}),),
    )
    ws = await raw_client(gw, user, device=device_id)
    await until(ws, p.Checkpoint)
    await ws.send(p.encode(batch))
    await ws.close()  # gone before the answer
    await eventually(lambda: _contains(gw.responder.applied, batch.batch_id), timeout=15, message="batch applied")
    ws = await raw_client(gw, user, device=device_id)
    await ws.send(p.encode(batch))
    result, _ = await until(ws, p.Result)
    assert result.batch_id == batch.batch_id and result.results[0].status == "applied"
    await ws.send(p.encode(batch))  # and once more on the same connection
    again, _ = await until(ws, p.Result)
    assert again.results == result.results
    await ws.close()
    assert gw.responder.applied.count(batch.batch_id) == 1
    assert gw.responder.seen.count(batch.batch_id) == 1, "answered from data.batches, not forwarded again"
    assert await gw.pool.fetchval("SELECT count(*) FROM data.records WHERE id = $1", batch.changes[0].id) == 1


async def _contains(xs: list[str], x: str) -> bool:
    return x in xs


async def test_device_gets_answer_after_reconnect_when_result_was_produced_while_away(gw: Any) -> None:
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    store = LocalStore()
    rid = store.create("task", {"subject": "call back"})
    batch = store.next_batch(50)  # what the SDK sends; then the link dies before the answer
    assert batch is not None
    ws = await raw_client(gw, user, device=store.device_id())
    await ws.send(p.encode(batch))
    await ws.close()
    await eventually(lambda: _contains(gw.responder.applied, batch.batch_id), timeout=15, message="applied while away")
    report = await Device(gw.url, store, gw.token(user)).sync(timeout=20)
    assert report.batches == 1 and not store.has_pending() and report.problems == []
    assert store.server_record("task", rid) == {"version": 1, "attributes": {"subject": "call back"}}
    assert gw.responder.seen.count(batch.batch_id) == 1


async def test_missed_batch_answer_is_found_in_stored_results(gw: Any) -> None:
    """The gateway never saw BatchApplied (lost, or produced before it read the topic): it looks
    the batch up in data.batches after sync_result_recheck_s instead of waiting forever."""
    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    store = LocalStore()
    rid = store.create("task", {"subject": "x"})
    gw.responder.hold = True
    try:
        report = await Device(gw.url, store, gw.token(user)).sync(timeout=10)
    finally:
        gw.responder.hold = False
    assert report.batches == 1 and not store.has_pending()
    assert await gw.pool.fetchval("SELECT count(*) FROM data.records WHERE id = $1", rid) == 1


async def test_disconnect_mid_download_resumes_without_starting_over(gw: Any) -> None:
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(3000, "mid"))
    store = LocalStore()
    seen: list[int] = []
    device = Device(gw.url, store, gw.token(user), on_progress=lambda d, t: seen.append(d))
    # Each page in a transaction of its own, so the cut lands mid-download (held pages, stored
    # together, resume the same way: device-sdk/tests/test_download_holding.py).
    device.hold_ops = 0

    class Cut(Exception):
        pass

    def cut_after_two_pages(ops: Any) -> None:
        if len(seen) >= 1:
            raise Cut()

    device.on_ops = cut_after_two_pages
    with pytest.raises(Cut):
        await device.sync(timeout=20)
    got = store.count("account")
    assert 0 < got < 3000 and store.cursor > 0
    device2 = Device(gw.url, store, gw.token(user))
    report = await device2.sync(timeout=20)
    assert store.count("account") == 3000
    assert report.ops <= 3000 - got + 10, "resumed from the stored position, not from zero"
    assert report.refetched == []


async def test_checksum_mismatch_refetches_only_the_disagreeing_bucket(gw: Any) -> None:
    user = await gw.user()
    good, bad = f"b-{user}-good", f"b-{user}-bad"
    await gw.subscribe(user, good, bad)
    await gw.put(good, "account", recs(50, "g"))
    await gw.put(bad, "contact", recs(50, "x"))
    store = LocalStore()
    await Device(gw.url, store, gw.token(user)).sync(timeout=20)
    # corrupt the local copy of one bucket (a lost write, a bad migration ...)
    store.db.execute("DELETE FROM membership WHERE bucket = ? AND id = 'x-00003'", (bad,))
    store.db.execute("DELETE FROM records WHERE id = 'x-00003'")
    # live path: the next checkpoint disagrees, the device asks for that bucket only
    stop = asyncio.Event()
    device = Device(gw.url, store, gw.token(user))
    # the hello reports what the device holds; the server resets the bucket right away
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _present(store, "contact", "x-00003"), timeout=15, message="bucket repaired")
    op = await gw.put(bad, "contact", {"x-00010": {"name": "changed"}})
    await gw.notify({bad: op})
    await eventually(lambda: _cursor_at(store, op), timeout=15)
    # now corrupt while connected: only the checkpoint can notice
    store.db.execute("UPDATE membership SET hash = hash + 1 WHERE bucket = ? AND id = 'x-00004'", (bad,))
    op = await gw.put(bad, "contact", {"x-00011": {"name": "changed"}})
    await gw.notify({bad: op})
    await eventually(lambda: _refetched(device, bad), timeout=15, message="refetch requested")
    await eventually(lambda: _checksums_match(store, gw, user), timeout=15, message="repaired")
    stop.set()
    await run
    assert device.report.refetched == [bad]
    assert store.count() == 100


async def _present(store: LocalStore, entity: str, rid: str) -> bool:
    return store.get(entity, rid) is not None


async def _refetched(device: Device, bucket: str) -> bool:
    return bucket in device.report.refetched


async def _checksums_match(store: LocalStore, gw: Any, user: str) -> bool:
    rows = await gw.pool.fetch(
        "SELECT b.id, b.checksum FROM sync.buckets b JOIN sync.user_buckets u ON u.bucket_id = b.id WHERE u.user_id = $1",
        user,
    )
    return store.local_checksums([r["id"] for r in rows]) == {r["id"]: r["checksum"] for r in rows}


async def test_profile_change_removes_buckets_and_keeps_pending_changes(gw: Any) -> None:
    user = await gw.user()
    keep, lose = f"b-{user}-keep", f"b-{user}-lose"
    await gw.subscribe(user, keep, lose)
    await gw.put(keep, "account", recs(10, "k"))
    await gw.put(lose, "contact", recs(10, "l"))
    await gw.put(lose, "account", {"k-00001": {"name": "k 1", "n": 1}})  # also in the kept bucket
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    await device.sync(timeout=20)
    assert store.count("contact") == 10
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _connected(gw, store.device_id()), timeout=10)
    gw.responder.hold = True
    try:
        store.update("contact", "l-00002", {"name": "pending edit"})
        await eventually(lambda: _inflight(store), timeout=10)
        await gw.unsubscribe(user, lose)
        await gw.notify_users(user)
        await eventually(lambda: _dropped(device, lose), timeout=15, message="drop frame")
    finally:
        gw.responder.hold = False
    assert store.count("contact") == 0
    assert store.count("account") == 10, "records also in a kept bucket stay"
    assert [c.id for c in store.pending()] == ["l-00002"], "pending change survives the drop"
    stop.set()
    await run


async def _inflight(store: LocalStore) -> bool:
    return any(c.batch_id for c in store.pending())


async def _dropped(device: Device, bucket: str) -> bool:
    return bucket in device.report.dropped


async def test_added_bucket_streams_from_scratch_while_connected(gw: Any) -> None:
    user = await gw.user()
    first, second = f"b-{user}-1", f"b-{user}-2"
    await gw.subscribe(user, first)
    await gw.put(first, "account", recs(5, "f"))
    await gw.put(second, "territory", recs(7, "t")) if False else None
    await gw.pool.execute("INSERT INTO sync.buckets(id) VALUES ($1)", second)
    await gw.put(second, "territory", recs(7, "t"))
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _count(store, "account", 5), timeout=10)
    assert store.count("territory") == 0, "never a record outside the user's buckets"
    await gw.subscribe(user, second)
    await gw.notify_users(user)
    await eventually(lambda: _count(store, "territory", 7), timeout=10)
    await eventually(lambda: _checksums_match(store, gw, user), timeout=10)
    stop.set()
    await run


async def _count(store: LocalStore, entity: str, n: int) -> bool:
    return store.count(entity) == n


async def test_token_renewal_resumes_from_checkpoint(gw: Any) -> None:
    """Failure mode 5: an expired token closes the session (4001); the SDK renews it and resumes
    from its cursor instead of downloading everything again."""
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(400, "tk"))
    tokens: list[str] = []

    def provider() -> str:
        tokens.append(gw.token(user, ttl=2 if not tokens else 3600))
        return tokens[-1]

    store = LocalStore()
    device = Device(gw.url, store, provider)
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _count(store, "account", 400), timeout=10)
    await eventually(lambda: _len(tokens, 2), timeout=10, message="token renewed after expiry")
    await eventually(lambda: _connections(device, 2), timeout=10)
    op = await gw.put(bucket, "account", {"tk-00001": {"name": "after renewal"}})
    await gw.notify({bucket: op})
    await eventually(lambda: _value(store, "account", "tk-00001", {"name": "after renewal"}), timeout=10)
    stop.set()
    await run
    assert device.report.ops == 401, "nothing re-sent after the renewal"


async def _len(xs: list[Any], n: int) -> bool:
    return len(xs) >= n


async def _connections(device: Device, n: int) -> bool:
    return device.report.connections >= n


async def test_forced_reset_keeps_pending_changes(gw: Any) -> None:
    """Failure mode 8: the profile is taken away while the device holds unsynced edits."""
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(5, "fr"))
    await gw.pool.execute(
        "INSERT INTO data.records(entity, id, version, attributes) VALUES ('account', 'fr-00001', 1, '{}')"
    )
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    await device.sync(timeout=20)
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _connected(gw, store.device_id()), timeout=10)
    gw.responder.hold = True
    try:
        store.update("account", "fr-00001", {"name": "unsynced"})
        await eventually(lambda: _inflight(store), timeout=10)
        await gw.pool.execute("DELETE FROM sync.user_profiles WHERE user_id = $1", user)
        await gw.notify_users(user)
        with pytest.raises(SyncRefused) as refused:
            await asyncio.wait_for(run, 15)
    finally:
        gw.responder.hold = False
    assert refused.value.code == p.CLOSE_NO_PROFILE
    assert store.count() == 0
    assert [(c.id, c.fields) for c in store.pending()] == [("fr-00001", {"name": "unsynced"})]
    assert store.get("account", "fr-00001") == {"name": "unsynced"}
    # the profile comes back (republished, and applied): the pending change is uploaded (once),
    # data re-downloaded
    await gw.pool.execute("UPDATE admin.published_profile_users SET version = 2 WHERE user_id = $1", user)
    await gw.pool.execute(
        "INSERT INTO sync.user_profiles(user_id, profile_id, profile_version) VALUES ($1, 'p1', 2)", user
    )
    await Device(gw.url, store, gw.token(user)).sync(timeout=20)
    assert not store.has_pending() and store.count() == 5


async def test_cursor_never_passes_an_uncommitted_op(gw: Any) -> None:
    """Failure mode 1: a notification can announce an op id whose transaction has not committed;
    the device's checkpoint must stay at ops it actually received, and the op must still arrive."""
    user = await gw.user()
    bucket = f"b-{user}"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(3, "s"))
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _count(store, "account", 3), timeout=10)
    before = store.cursor
    conn = await gw.pool.acquire()
    tx = conn.transaction()
    await tx.start()
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sync:ops'))")
    held_op = await conn.fetchval("SELECT nextval('sync.op_id_seq')")
    await conn.execute(
        "INSERT INTO sync.record_index(entity, record_id, version, attributes) VALUES ('account', 's-late', 1, '{}')"
    )
    await conn.execute("INSERT INTO sync.bucket_ops VALUES ($1, 'account', 's-late', $2, 'put', 1)", bucket, held_op)
    await gw.notify({bucket: held_op + 5})  # announced early (or a later writer's op)
    writer = asyncio.create_task(gw.put(bucket, "account", {"s-after": {}}))  # waits for the lock
    await eventually(lambda: _checkpoints(device, 2), timeout=10, message="checkpoint after the early notify")
    assert store.cursor == before, "no checkpoint beyond what was delivered"
    await conn.execute(f"UPDATE sync.buckets SET last_op_id = {held_op} WHERE id = $1", bucket)
    await tx.commit()
    await gw.pool.release(conn)
    op = await writer
    await gw.notify({bucket: op})
    await eventually(lambda: _count(store, "account", 5), timeout=10, message="late op delivered")
    await eventually(lambda: _checksums_match(store, gw, user), timeout=10)
    stop.set()
    await run


async def _checkpoints(device: Device, n: int) -> bool:
    return device.report.checkpoints >= n


async def test_device_never_receives_another_users_records(gw: Any) -> None:
    alice, bob = await gw.user(), await gw.user()
    await gw.subscribe(alice, f"b-{alice}")
    await gw.subscribe(bob, f"b-{bob}")
    await gw.put(f"b-{alice}", "account", {"alice-1": {}})
    await gw.put(f"b-{bob}", "account", {"bob-1": {}})
    store = LocalStore()
    device = Device(gw.url, store, gw.token(alice))
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _count(store, "account", 1), timeout=10)
    op_b = await gw.put(f"b-{bob}", "account", {"bob-2": {}})
    op_a = await gw.put(f"b-{alice}", "account", {"alice-2": {}})
    await gw.notify({f"b-{bob}": op_b, f"b-{alice}": op_a})  # one notify naming both buckets
    await eventually(lambda: _count(store, "account", 2), timeout=10)
    ws = await raw_client(gw, alice, cursor=0, checksums={f"b-{bob}": 0})  # asking for Bob's bucket
    drop, _ = await until(ws, p.Drop)
    assert drop.buckets == (f"b-{bob}",)
    await ws.close()
    stop.set()
    await run
    assert sorted(rid for rid, _ in store.list("account")) == ["alice-1", "alice-2"]


async def test_cli_device_logs_in_syncs_and_edits(gw: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    user = await gw.user()
    await gw.subscribe(user, f"b-{user}")
    await gw.put(f"b-{user}", "account", recs(20, "cli"))
    db = str(tmp_path / "cli.sqlite")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "offsync_device.cli", "--store", db, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert (await asyncio.to_thread(cli, "login", "--url", gw.url, "--token", gw.token(user))).returncode == 0
    synced = await asyncio.to_thread(cli, "sync")
    assert synced.returncode == 0, synced.stderr
    assert "synced: 20 ops" in synced.stdout and "20/20" in synced.stderr  # progress bar
    assert (await asyncio.to_thread(cli, "edit", "account", "cli-00001", "name=edited")).returncode == 0
    pending = await asyncio.to_thread(cli, "pending")
    assert "update account cli-00001" in pending.stdout
    synced = await asyncio.to_thread(cli, "sync")
    assert "1 batch(es) uploaded" in synced.stdout, synced.stdout + synced.stderr
    # the stand-in holds no server copy of these records: the change comes back rejected, shown
    conflicts = await asyncio.to_thread(cli, "conflicts")
    assert "rejected account cli-00001 (not_found: " in conflicts.stdout  # with the server's reason


async def test_a_notification_that_never_came_is_repaired(gw: Any) -> None:
    """The repair net: an op committed to a bucket whose notification is lost (no notify sent
    here) still reaches the connected device, within two reconcile rounds."""
    user = await gw.user()
    bucket = f"b-{user}-quiet"
    await gw.subscribe(user, bucket)
    await gw.put(bucket, "account", recs(3, "q"))
    store = LocalStore()
    device = Device(gw.url, store, gw.token(user))
    await device.sync(timeout=20)
    stop = asyncio.Event()
    run = asyncio.create_task(device.run(stop))
    await eventually(lambda: _connected(gw, store.device_id()), timeout=10, message="device connected")
    before = gw.gateway.hub.reconciled
    op = await gw.put(bucket, "account", {"q-00001": {"name": "changed quietly"}})  # and no notify
    rounds = 3 * gw.settings.sync_reconcile_s + 5
    await eventually(
        lambda: _value(store, "account", "q-00001", {"name": "changed quietly"}),
        timeout=rounds,
        message="the op reached the device without its notification",
    )
    await eventually(lambda: _cursor_at(store, op), timeout=rounds)
    assert gw.gateway.hub.reconciled > before
    stop.set()
    await run
