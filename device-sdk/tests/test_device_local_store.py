"""The device's local store and outbox (no network): ordering and merging of offline changes,
results applied to the store, checksums, drops that keep pending changes; backoff; the CLI."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offsync_device.backoff import Backoff, retry_after_from_reason
from offsync_device.cli import main as cli
from offsync_device.client import Device
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.checksum import MOD, op_hash


def seeded(n: int = 3) -> LocalStore:
    s = LocalStore()
    s.apply_ops([(i + 1, "b1", "put", "account", f"a{i}", 1, {"name": f"n{i}"}) for i in range(n)])
    return s


def test_three_quick_updates_lose_nothing() -> None:
    """Failure mode 9."""
    s = seeded()
    s.update("account", "a0", {"name": "x"})
    s.update("account", "a0", {"phone": "1"})
    s.update("account", "a0", {"name": "z", "city": "c"})
    batch = s.next_batch(10)
    assert batch is not None and len(batch.changes) == 1
    ch = batch.changes[0]
    assert ch.op == "update" and ch.base_version == 1 and ch.fields == {"name": "z", "phone": "1", "city": "c"}
    assert s.get("account", "a0") == {"name": "z", "phone": "1", "city": "c"}


def test_edits_after_a_batch_left_are_kept_in_order_and_rebased_on_the_result() -> None:
    s = seeded()
    s.update("account", "a0", {"name": "first"})
    b1 = s.next_batch(10)
    assert b1 is not None
    s.update("account", "a0", {"name": "second"})  # while b1 is in flight: a new change
    assert s.next_batch(10) == b1, "the in-flight batch is resent as is (same id)"
    s.apply_result(p.Result(b1.batch_id, (p.ChangeResult(0, "account", "a0", "applied", version=2),)))
    b2 = s.next_batch(10)
    assert b2 is not None and b2.batch_id != b1.batch_id
    assert b2.changes[0].fields == {"name": "second"} and b2.changes[0].base_version == 2
    assert s.server_record("account", "a0") == {"version": 2, "attributes": {"name": "first"}}
    assert s.get("account", "a0") == {"name": "second"}


def test_create_then_delete_offline_never_reaches_the_server() -> None:
    s = LocalStore()
    rid = s.create("task", {"t": 1})
    s.update("task", rid, {"t": 2})
    assert s.get("task", rid) == {"t": 2}
    s.delete("task", rid)
    assert s.pending() == [] and s.get("task", rid) is None


def test_delete_of_a_server_record_replaces_unsent_updates() -> None:
    s = seeded()
    s.update("account", "a1", {"name": "x"})
    s.delete("account", "a1")
    assert [(c.op, c.base_version) for c in s.pending()] == [("delete", 1)]
    with pytest.raises(ValueError):
        s.update("account", "a1", {"name": "y"})


def test_update_of_unknown_record_is_refused() -> None:
    with pytest.raises(KeyError):
        LocalStore().update("account", "nope", {"a": 1})


def test_conflict_and_rejection_results_are_logged_and_applied() -> None:
    s = seeded()
    s.update("account", "a0", {"name": "mine"})
    s.create("poison", {"x": 1})
    b = s.next_batch(10)
    assert b is not None
    problems = s.apply_result(
        p.Result(
            b.batch_id,
            (
                p.ChangeResult(
                    0,
                    "account",
                    "a0",
                    "conflict",
                    version=5,
                    record={"version": 5, "deleted": False, "attributes": {"name": "theirs"}},
                ),
                p.ChangeResult(1, "poison", b.changes[1].id, "rejected", code="validation", message="no"),
            ),
        )
    )
    assert [r.status for r in problems] == ["conflict", "rejected"]
    assert s.get("account", "a0") == {"name": "theirs"} and not s.has_pending()
    assert [(c.status, c.local["fields"]) for c in s.conflicts()] == [
        ("conflict", {"name": "mine"}),
        ("rejected", {"x": 1}),
    ]
    assert s.apply_result(p.Result(b.batch_id, ())) == [], "a duplicate answer is a no-op"


def test_checksums_follow_puts_and_removes() -> None:
    s = seeded(3)
    s.apply_ops([(9, "b1", "put", "account", "a0", 2, {"name": "v2"}), (10, "b1", "remove", "account", "a2", 1, None)])
    want = (op_hash("account", "a0", 2) + op_hash("account", "a1", 1)) % MOD
    assert s.checkpoint(10, {"b1": want}) == []
    assert s.cursor == 10 and s.count() == 2
    assert s.checkpoint(11, {"b1": want + 1}) == ["b1"] and s.cursor == 10


def test_drop_keeps_records_of_other_buckets_and_pending_changes() -> None:
    """Failure mode 8 at the store level."""
    s = seeded(2)
    s.apply_ops([(5, "b2", "put", "account", "a0", 1, {"name": "n0"}), (6, "b2", "put", "contact", "c0", 1, {})])
    s.update("contact", "c0", {"x": 1})
    s.drop_buckets(["b2"])
    assert s.count("account") == 2 and s.count("contact") == 0
    assert [c.id for c in s.pending()] == ["c0"] and s.get("contact", "c0") == {"x": 1}
    s.forget_all()
    assert s.count() == 0 and s.cursor == 0 and len(s.pending()) == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "remove"]), st.integers(0, 9), st.integers(1, 4), st.sampled_from(["b1", "b2"])
        ),
        max_size=40,
    )
)
def test_local_checksum_equals_reference(ops: list[tuple[str, int, int, str]]) -> None:
    s = LocalStore()
    ref: dict[tuple[str, str], int] = {}
    rows: list[p.OpRow] = []
    for n, (op, i, v, b) in enumerate(ops):
        rows.append((n + 1, b, op, "e", f"r{i}", v, {} if op == "put" else None))
        if op == "put":
            ref[(b, f"r{i}")] = v
        else:
            ref.pop((b, f"r{i}"), None)
    for row in rows:  # one op per page: order matters within a bucket
        s.apply_ops([row])
    want = {b: sum(op_hash("e", r, v) for (bb, r), v in ref.items() if bb == b) % MOD for b in ("b1", "b2")}
    assert s.local_checksums(["b1", "b2"]) == want


# ------------------------------------------------------------ bucket sums (triggers) ----


def recomputed(s: LocalStore) -> dict[str, int]:
    """The checksums from scratch, as the store computed them before bucket_sums existed."""
    return {b: int(t) % MOD for b, t in s.db.execute("SELECT bucket, SUM(hash) FROM membership GROUP BY bucket")}


def assert_sums_right(s: LocalStore) -> None:
    want = recomputed(s)
    held = {r[0] for r in s.db.execute("SELECT id FROM buckets")}
    names = set(want) | held | {"b1", "b2", "b3", "gone"}
    assert s.local_checksums(names) == {b: want.get(b, 0) for b in names}
    assert s.local_checksums() == {b: want.get(b, 0) for b in set(want) | held}
    assert s.held_checksums() == {b: want.get(b, 0) for b in held}


def held_rows(s: LocalStore) -> set[str]:
    """The buckets the store holds as of its last checkpoint (their sums are in bucket_sums)."""
    return {r[0] for r in s.db.execute("SELECT id FROM buckets")}


def put(op_id: int, bucket: str, rid: str, version: int = 1) -> p.OpRow:
    return (op_id, bucket, "put", "e", rid, version, {"v": version})


def remove(op_id: int, bucket: str, rid: str) -> p.OpRow:
    return (op_id, bucket, "remove", "e", rid, 0, None)


def _ops(*rows: p.OpRow) -> Callable[[LocalStore], object]:
    return lambda s: s.apply_ops(list(rows))


def _sql(sql: str, *args: object) -> Callable[[LocalStore], object]:
    return lambda s: s.db.execute(sql, args)


SUM_CASES: list[tuple[str, list[Callable[[LocalStore], object]]]] = [
    ("put", [_ops(put(1, "b1", "r1"), put(2, "b2", "r2"))]),
    ("put a newer version", [_ops(put(1, "b1", "r1")), _ops(put(2, "b1", "r1", 2))]),
    ("put an older version", [_ops(put(1, "b1", "r1", 3)), _ops(put(2, "b1", "r1", 2))]),
    ("one page puts a record twice", [_ops(put(1, "b1", "r1"), put(2, "b1", "r1", 2), put(3, "b1", "r1", 3))]),
    ("remove", [_ops(put(1, "b1", "r1"), put(2, "b1", "r2")), _ops(remove(3, "b1", "r1"))]),
    ("remove the last member", [_ops(put(1, "b1", "r1")), _ops(remove(2, "b1", "r1"))]),
    ("remove what is not there", [_ops(remove(1, "b1", "r1"))]),
    ("drop", [_ops(put(1, "b1", "r1"), put(2, "b2", "r1")), lambda s: s.drop_buckets(["b2"])]),
    ("reset then re-send", [_ops(put(1, "b1", "r1")), lambda s: s.reset_buckets(["b1"]), _ops(put(2, "b1", "r1", 2))]),
    ("forget_all", [_ops(put(1, "b1", "r1"), put(2, "b2", "r2")), lambda s: s.forget_all()]),
    ("raw delete", [_ops(put(1, "b1", "r1"), put(2, "b1", "r2")), _sql("DELETE FROM membership WHERE id = 'r1'")]),
    ("raw delete all", [_ops(put(1, "b1", "r1"), put(2, "b2", "r2")), _sql("DELETE FROM membership")]),
    ("raw hash change", [_ops(put(1, "b1", "r1")), _sql("UPDATE membership SET hash = hash + 1")]),
    (
        "raw huge hash",
        [_ops(put(1, "b1", "r1")), _sql("UPDATE membership SET hash = ?", 2**62 + 5), _ops(put(2, "b1", "r2"))],
    ),
    ("raw negative hash", [_ops(put(1, "b1", "r1")), _sql("UPDATE membership SET hash = -7")]),
    (
        "raw move to another bucket",
        [_ops(put(1, "b1", "r1"), put(2, "b1", "r2")), _sql("UPDATE membership SET bucket = 'b3' WHERE id = 'r1'")],
    ),
    ("raw insert", [_sql("INSERT INTO membership VALUES ('e', 'x', 'b2', 1, 12345)")]),
    (
        "raw insert or replace",
        [_ops(put(1, "b1", "r1")), _sql("INSERT OR REPLACE INTO membership VALUES ('e', 'r1', 'b1', 9, 77)")],
    ),
    ("raw replace into", [_ops(put(1, "b1", "r1")), _sql("REPLACE INTO membership VALUES ('e', 'r1', 'b1', 9, 78)")]),
    (
        "checkpoint after a raw change",
        [_ops(put(1, "b1", "r1")), _sql("UPDATE membership SET hash = 1"), lambda s: s.checkpoint(1, {"b1": 1})],
    ),
]


@pytest.mark.parametrize("steps", [c[1] for c in SUM_CASES], ids=[c[0] for c in SUM_CASES])
def test_bucket_sums_match_a_recomputation(steps: list[Callable[[LocalStore], object]]) -> None:
    s = LocalStore()
    s.hold_buckets(["b1"])
    for step in steps:
        step(s)
        assert_sums_right(s)


_rids = st.sampled_from(["r0", "r1", "r2", "r3"])
_buckets = st.sampled_from(["b1", "b2", "b3"])
_op = st.tuples(st.sampled_from(["put", "remove"]), _buckets, _rids, st.integers(1, 5))
_hashes = st.integers(-(2**40), 2**40)
_step = st.one_of(
    st.tuples(st.just("ops"), st.lists(_op, min_size=1, max_size=4)),
    st.tuples(st.just("drop"), st.lists(_buckets, max_size=2)),
    st.tuples(st.just("reset"), st.lists(_buckets, max_size=2)),
    st.tuples(st.just("forget_all")),
    st.tuples(st.just("checkpoint"), st.lists(_buckets, max_size=3), st.booleans()),
    st.tuples(st.just("frame"), _op, st.lists(_buckets, max_size=3), st.booleans()),
    st.tuples(st.just("raw_delete"), _buckets, _rids),
    st.tuples(st.just("raw_hash"), _buckets, _hashes),
    st.tuples(st.just("raw_move"), _rids, _buckets),
    st.tuples(st.just("raw_insert"), _buckets, _rids, _hashes),
    st.tuples(st.just("raw_replace"), _buckets, _rids, _hashes),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_step, max_size=25))
def test_bucket_sums_never_drift(steps: list[tuple[Any, ...]]) -> None:
    """Whatever the SDK or raw SQL does to membership, the triggers keep every bucket's sum equal
    to a recomputation; a checkpoint stores exactly what the server said, or nothing. The raw
    hashes written here are the "server's" truth, so the full verification (which would call
    them corrupt: test_store_verification.py) is off."""
    s = LocalStore(full_verify_every=None)
    n = 0
    for step in steps:
        kind = step[0]
        n += 1
        if kind == "ops":
            s.apply_ops([(n, b, op, "e", rid, v, {} if op == "put" else None) for op, b, rid, v in step[1]])
        elif kind == "drop":
            s.drop_buckets(step[1])
        elif kind == "reset":
            s.reset_buckets(step[1])
        elif kind == "forget_all":
            s.forget_all()
        elif kind in ("checkpoint", "frame"):
            names, right = step[-2], step[-1]
            before = (s.cursor, held_rows(s))
            want = recomputed(s)
            row: p.OpRow | None = None
            if kind == "frame":
                op, bucket, rid, v = step[1]
                row = (n, bucket, op, "e", rid, v, {} if op == "put" else None)
                # the bucket's sum once the frame's op is stored
                old = s.db.execute("SELECT hash FROM membership WHERE id = ? AND bucket = ?", (rid, bucket)).fetchone()
                added = op_hash("e", rid, v) if op == "put" else 0
                want[bucket] = (want.get(bucket, 0) - (old[0] if old else 0) + added) % MOD
            sums = {b: want.get(b, 0) if right else (want.get(b, 0) + 1) % MOD for b in names}
            if row is None:
                bad = s.checkpoint(n, sums)
            else:
                applied, bad = s.apply_frame([row], None, p.Checkpoint(n, sums))
                assert applied == 1
            if right or not names:
                assert bad == [] and s.cursor == n and held_rows(s) == set(sums)
            else:
                assert bad == sorted(set(names)) and (s.cursor, held_rows(s)) == before
        elif kind == "raw_delete":
            s.db.execute("DELETE FROM membership WHERE bucket = ? AND id = ?", (step[1], step[2]))
        elif kind == "raw_hash":
            s.db.execute("UPDATE membership SET hash = hash + ? WHERE bucket = ?", (step[2], step[1]))
        elif kind == "raw_move":
            s.db.execute("UPDATE OR REPLACE membership SET bucket = ? WHERE id = ?", (step[2], step[1]))
        elif kind == "raw_insert":
            s.db.execute("INSERT OR IGNORE INTO membership VALUES ('e', ?, ?, 1, ?)", (step[2], step[1], step[3]))
        elif kind == "raw_replace":
            s.db.execute("INSERT OR REPLACE INTO membership VALUES ('e', ?, ?, 1, ?)", (step[2], step[1], step[3]))
        assert_sums_right(s)


# The store schema before bucket_sums (PRAGMA user_version 0), as files written by older SDKs have it.
_V0_SCHEMA = """
CREATE TABLE records (
    entity TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, attributes TEXT NOT NULL,
    PRIMARY KEY (entity, id)) WITHOUT ROWID;
CREATE TABLE membership (
    entity TEXT NOT NULL, id TEXT NOT NULL, bucket TEXT NOT NULL, version INTEGER NOT NULL,
    hash INTEGER NOT NULL, PRIMARY KEY (entity, id, bucket)) WITHOUT ROWID;
CREATE TABLE buckets (id TEXT PRIMARY KEY, checksum INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
    base_version INTEGER, fields TEXT NOT NULL, batch_id TEXT, created_at REAL NOT NULL);
CREATE INDEX outbox_record ON outbox(entity, id);
CREATE TABLE conflicts (
    n INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT, seq INTEGER, entity TEXT, id TEXT,
    status TEXT, code TEXT, message TEXT, local TEXT, server TEXT, at REAL);
"""


def test_a_store_file_of_the_old_schema_is_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(_V0_SCHEMA)
    members = [("account", f"a{i}", f"b{i % 3}", i, op_hash("account", f"a{i}", i)) for i in range(1, 31)]
    old.executemany("INSERT INTO records VALUES (?, ?, ?, '{}')", [m[:2] + (m[3],) for m in members])
    old.executemany("INSERT OR REPLACE INTO membership VALUES (?, ?, ?, ?, ?)", members)
    old.executemany("INSERT INTO buckets VALUES (?, 0)", [("b0",), ("b1",), ("b2",), ("b9",)])
    old.execute("INSERT INTO meta VALUES ('cursor', '30')")
    old.close()
    want = {f"b{k}": sum(m[4] for m in members if m[2] == f"b{k}") % MOD for k in range(3)}

    s = LocalStore(path)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert s.held_checksums() == {**want, "b9": 0} and s.cursor == 30
    assert_sums_right(s)
    s.apply_ops([put(31, "b1", "a1", 40)])
    assert s.checkpoint(31, recomputed(s)) == [] and s.cursor == 31
    s.close()

    s = LocalStore(path)  # already upgraded: the kept sums are used as they are
    assert_sums_right(s)
    s.db.execute("PRAGMA user_version = 0")  # an upgrade run twice (two processes) is harmless
    s.close()
    s = LocalStore(path)
    assert_sums_right(s)
    s.close()


def test_a_refetch_repairs_sums_that_drifted(tmp_path: Path) -> None:
    """A connection without recursive triggers (an older SDK, the sqlite3 shell) replacing a row
    fires no delete trigger: the sum drifts, the checkpoint disagrees, and the refetch's reset must
    leave the bucket right again."""
    path = tmp_path / "s.sqlite"
    s = LocalStore(path)
    s.apply_ops([put(1, "b1", "r1"), put(2, "b1", "r2"), put(3, "b2", "r3")])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("INSERT OR REPLACE INTO membership VALUES ('e', 'r1', 'b1', 1, ?)", (op_hash("e", "r1", 1),))
    other.close()
    assert s.checkpoint(3, recomputed(s)) == ["b1"]
    s.reset_buckets(["b1"])
    s.apply_ops([put(4, "b1", "r1"), put(5, "b1", "r2")])
    assert_sums_right(s)
    assert s.checkpoint(5, recomputed(s)) == []


def trace(s: LocalStore) -> list[str]:
    statements: list[str] = []
    s.db.set_trace_callback(statements.append)
    return statements


def test_a_live_frame_is_stored_and_checked_in_one_transaction() -> None:
    s = seeded(3)
    s.hold_buckets(["b1", "b2"])
    sums = {"b1": (recomputed(s)["b1"] - op_hash("account", "a0", 1) + op_hash("account", "a0", 2)) % MOD, "b2": 0}
    statements = trace(s)
    assert s.apply_frame([(4, "b1", "put", "account", "a0", 2, {"name": "v2"})], None, p.Checkpoint(4, sums)) == (1, [])
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1
    assert (
        s.cursor == 4
        and held_rows(s) == set(sums)
        and s.server_record("account", "a0") == {"version": 2, "attributes": {"name": "v2"}}
    )


def test_a_frame_whose_checkpoint_disagrees_keeps_its_ops_but_not_the_cursor() -> None:
    s = seeded(3)
    assert s.checkpoint(3, {"b1": recomputed(s)["b1"], "b2": 0}) == []
    before = held_rows(s)
    frame = [(4, "b1", "put", "account", "a9", 1, {"name": "new"})]
    sums = {"b1": (recomputed(s)["b1"] + op_hash("account", "a9", 1)) % MOD, "b2": 5, "b3": 1}
    assert s.apply_frame(frame, None, p.Checkpoint(4, sums)) == (1, ["b2", "b3"])
    assert s.get("account", "a9") == {"name": "new"}, "the ops are stored whatever the checkpoint says"
    assert s.cursor == 3 and held_rows(s) == before


def test_a_checkpoint_writes_only_what_changed() -> None:
    s = seeded(3)
    s.apply_ops([(4, "b2", "put", "account", "x", 1, {})])
    sums = recomputed(s)
    assert s.checkpoint(4, sums) == []
    writes = s.db.total_changes
    assert s.checkpoint(4, sums) == [] and s.db.total_changes == writes, "nothing new: nothing written"
    statements = trace(s)
    assert s.checkpoint(5, {"b1": sums["b1"], "b3": 0}) == []  # b2 left, b3 came, b1 unchanged
    assert held_rows(s) == {"b1", "b3"} and s.cursor == 5
    assert s.db.total_changes - writes == 3 and not any("DELETE FROM buckets" == q.strip() for q in statements)


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, data: str) -> None:
        self.sent.append(data)


async def test_device_stores_a_live_frame_then_verifies_its_checkpoint() -> None:
    s = seeded(3)
    calls: list[tuple[str, object]] = []
    device = Device(
        "ws://x",
        s,
        "t",
        device_id="d",
        on_ops=lambda ops: calls.extend(("ops", s.get("account", op[4])) for op in ops),
        on_progress=lambda done, total: calls.append(("progress", (done, total))),
    )
    ws = FakeSocket()
    row = (4, "b1", "put", "account", "a7", 1, {"name": "seven"})
    good = {"b1": (recomputed(s)["b1"] + op_hash("account", "a7", 1)) % MOD}
    assert device._on_frame(ws, p.Ops(ops=[row], done=1, total=1, checkpoint=p.Checkpoint(4, good)), False)  # type: ignore[arg-type]
    assert calls == [("ops", {"name": "seven"}), ("progress", (1, 1))], "on_ops runs once the ops are stored"
    assert (device.report.ops, device.report.checkpoints, device.report.cursor, s.cursor) == (
        1,
        1,
        4,
        4,
    ) and ws.sent == []

    row = (5, "b1", "put", "account", "a8", 1, {"name": "eight"})
    bad = p.Checkpoint(5, {"b1": good["b1"], "b2": 1})
    assert not device._on_frame(ws, p.Ops(ops=[row], done=1, total=1, checkpoint=bad), True)  # type: ignore[arg-type]
    assert s.get("account", "a8") == {"name": "eight"} and s.cursor == 4
    await asyncio.sleep(0)  # one turn of the loop: the refetch is sent by a task queued from the read callback
    assert ws.sent == [p.encode(p.Refetch(("b1", "b2"))).decode()] and device.report.refetched == ["b1", "b2"]

    # a bare checkpoint frame (devices without the feature, or nothing new) takes the same path
    assert device._on_frame(ws, p.Checkpoint(6, recomputed(s)), False)  # type: ignore[arg-type]
    assert s.cursor == 6 and device.report.checkpoints == 2
    assert not device._on_frame(ws, p.Ops(ops=[], done=0, total=9), True)  # type: ignore[arg-type]


def test_backoff_is_jittered_exponential_and_capped() -> None:
    b = Backoff(base=0.1, cap=5, rng=random.Random(7))
    delays = [[b.delay(n) for _ in range(200)] for n in range(10)]
    assert all(0 <= d <= min(5, 0.1 * 2**n) for n, ds in enumerate(delays) for d in ds)
    assert len({round(d, 6) for d in delays[5]}) > 150, "jittered: devices do not reconnect in lockstep"
    assert max(delays[9]) <= 5
    assert b.delay(0, at_least=2.0) >= 2.0
    assert retry_after_from_reason("try_again_later: connection rate cap; retry_after=0.25") == 0.25
    assert retry_after_from_reason("going_away") == 0.0


def test_bulk_store_applies_every_page() -> None:
    """Bulk pages as the initial download writes them (its speed is the bench's initial_sync figure)."""
    s = LocalStore()
    pages = [
        [
            (
                i,
                "b",
                "put",
                "account",
                f"r{i:06d}",
                1,
                {"name": f"Account {i}", "city": "Paris", "revenue": i, "d": "x" * 300},
            )
            for i in range(k, k + 2000)
        ]
        for k in range(0, 40000, 2000)
    ]
    for page in pages:
        s.apply_ops(page, resume=page[-1][0])
    assert s.count() == 40000


def test_cli_offline_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "d.sqlite")
    s = LocalStore(db)
    s.apply_ops([(1, "b", "put", "account", "a1", 1, {"name": "Contoso"})])
    s.close()
    assert cli(["--store", db, "login", "--url", "ws://x/v1/sync", "--token", "t"]) == 0
    assert cli(["--store", db, "edit", "account", "a1", "name=Fabrikam", "size=12"]) == 0
    assert cli(["--store", db, "create", "task", "subject=call"]) == 0
    assert cli(["--store", db, "list", "account"]) == 0
    assert cli(["--store", db, "pending"]) == 0
    assert cli(["--store", db, "status"]) == 0
    assert cli(["--store", db, "edit", "account", "nope", "a=1"]) == 1
    out = capsys.readouterr().out
    # No entity metadata on this device yet (token login): values stay the strings typed.
    assert '"name":"Fabrikam","size":"12"' in out and "queued" in out and "pending 2" in out


def _contents(s: LocalStore) -> tuple[list[tuple[object, ...]], ...]:
    return tuple(
        s.db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in ("records", "membership", "bucket_sums")
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["b1", "b2"]), st.integers(0, 40), st.integers(1, 4)), min_size=250, max_size=700
    )
)
def test_a_page_stored_in_multi_row_inserts_equals_one_row_at_a_time(page: list[tuple[str, int, int]]) -> None:
    """Pages of hundreds of puts go in as multi-row INSERTs: the same rows as one execution per
    row, a key repeated inside one statement resolved against the rows before it (an older
    version never overwrites a newer record), and every trigger (the bucket sums) fired."""
    ops = [(n + 1, b, "put", "account", f"a{k}", v, {"name": f"n{k}v{v}"}) for n, (b, k, v) in enumerate(page)]
    whole, row_by_row = LocalStore(), LocalStore()
    whole.apply_ops(ops)
    for op in ops:
        row_by_row.apply_ops([op])
    assert _contents(whole) == _contents(row_by_row)
    held = whole.db.execute("SELECT bucket, id, version FROM membership").fetchall()
    for b, total in whole.local_checksums().items():
        assert total == sum(op_hash("account", k, v) for bb, k, v in held if bb == b) % MOD
