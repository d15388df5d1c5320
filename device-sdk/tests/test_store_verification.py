"""The live checkpoint's cost and its corruption detection: a live change costs O(changed rows)
(the trigger-kept sums, whatever the rows held), and every ``full_verify_every``-th checkpoint, at
least ``full_verify_min_s`` after the last, recomputes every held row, so a row corrupted behind
the triggers' back is still noticed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.checksum import MOD, op_hash


def held(n: int, path: Path, every: int = 1000, **kw: Any) -> LocalStore:
    """A store file holding ``n`` rows, opened afresh (as an app start finds it): its first
    checkpoint is a full verification."""
    first = LocalStore(path, full_verify_every=every)
    first.apply_ops([(i + 1, "b1", "put", "account", f"a{i}", 1, {"name": f"n{i}"}) for i in range(n)])
    first.close()
    return LocalStore(path, full_verify_every=every, **kw)


def server_sums(s: LocalStore) -> dict[str, int]:
    """What the server's checksums are for a store that holds its rows right."""
    rows = s.db.execute("SELECT bucket, entity, id, version FROM membership").fetchall()
    out: dict[str, int] = {}
    for b, e, i, v in rows:
        out[b] = (out.get(b, 0) + op_hash(e, i, v)) % MOD
    return out


class Work:
    """What one live frame made SQLite do: the statements and the virtual-machine steps (rows
    visited show up as steps), counted by a trace callback and a progress handler."""

    def __init__(self, s: LocalStore) -> None:
        self.statements: list[str] = []
        self.steps = 0
        s.db.set_trace_callback(self.statements.append)
        s.db.set_progress_handler(self._step, 1)

    def _step(self) -> int:
        self.steps += 1
        return 0


def live_change(s: LocalStore, version: int) -> tuple[list[str], Work]:
    row = (10_000_000 + version, "b1", "put", "account", "a0", version, {"name": f"v{version}"})
    sums = server_sums(s)
    sums["b1"] = (sums["b1"] - op_hash("account", "a0", version - 1) + op_hash("account", "a0", version)) % MOD
    work = Work(s)
    _, bad = s.apply_frame([row], None, p.Checkpoint(10_000_000 + version, sums))
    s.db.set_trace_callback(None)
    s.db.set_progress_handler(None, 1)
    return bad, work


def test_a_live_change_does_the_same_work_whatever_the_rows_held(tmp_path: Path) -> None:
    small, big = held(10, tmp_path / "small.sqlite"), held(20_000, tmp_path / "big.sqlite")
    for s in (small, big):
        assert s.checkpoint(0, server_sums(s)) == []  # the store's first checkpoint: a full one
    (bad_small, w_small), (bad_big, w_big) = live_change(small, 2), live_change(big, 2)
    assert bad_small == bad_big == []
    assert w_small.statements == w_big.statements, "the same statements, no scan that grows with the rows"
    assert not any("op_hash(" in q for q in w_big.statements), "no full verification on this change"
    # B-tree lookups get a level deeper at 20,000 rows; a scan of them would be >= 20,000 steps.
    assert w_big.steps < 2 * w_small.steps + 200, (w_small.steps, w_big.steps)


def test_every_nth_checkpoint_recomputes_every_row(tmp_path: Path) -> None:
    s = held(50, tmp_path / "s.sqlite", every=4, full_verify_min_s=0)
    assert s.checkpoint(0, server_sums(s)) == [] and s.full_verifications == 1
    work = [live_change(s, v)[1] for v in range(2, 10)]
    full = [any("op_hash(" in q for q in w.statements) for w in work]
    assert full == [False, False, False, True, False, False, False, True]
    assert s.full_verifications == 3
    assert min(w.steps for w, f in zip(work, full, strict=True) if f) > 50, "the full one visits every row"


def test_full_verifications_are_at_least_the_interval_apart(tmp_path: Path) -> None:
    """Counted in checkpoints alone, a device receiving many changes a second would recompute
    its rows every few seconds; the interval bounds that by time."""
    now = [1000.0]
    s = held(50, tmp_path / "s.sqlite", every=2, full_verify_min_s=60.0, clock=lambda: now[0])
    assert s.checkpoint(0, server_sums(s)) == [] and s.full_verifications == 1  # the first: full
    for v in range(2, 12):  # ten live changes within a second: the count is passed, the time not
        now[0] += 0.1
        live_change(s, v)
    assert s.full_verifications == 1
    now[0] += 60.0
    live_change(s, 12)
    assert s.full_verifications == 2
    live_change(s, 13)
    assert s.full_verifications == 2


@pytest.mark.parametrize(
    "corrupt",
    [
        # A version rewritten in place: the update trigger keeps the (unchanged) stored hash.
        "UPDATE membership SET version = version + 7 WHERE id = 'a3'",
        # The stored hash and the kept sum both rewritten: the sums alone agree with the server.
        "UPDATE membership SET hash = hash + 1 WHERE id = 'a3'; "
        "UPDATE bucket_sums SET total = (total - 1) % 4294967296 WHERE bucket = 'b1'",
        # A member row gone without the delete trigger seeing it.
        "DROP TRIGGER membership_sum_delete; DELETE FROM membership WHERE id = 'a3'",
    ],
)
def test_a_row_corrupted_while_connected_is_noticed_by_the_next_full_verification(tmp_path: Path, corrupt: str) -> None:
    path = tmp_path / "s.sqlite"
    s = held(20, path, every=3, full_verify_min_s=0)
    truth = server_sums(s)
    assert s.checkpoint(1, truth) == []
    other = sqlite3.connect(path, isolation_level=None)  # another writer: a bad migration, a tool
    other.executescript(corrupt)
    other.close()
    results = [s.checkpoint(1 + i, truth) for i in range(1, 4)]
    assert results[-1] == ["b1"], results
    assert s.cursor < 4, "a checkpoint over a corrupted bucket is not stored"


def test_the_refetch_of_a_drifted_bucket_repairs_it(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = held(5, path, every=1, full_verify_min_s=0)
    truth = server_sums(s)
    s.db.execute("UPDATE membership SET version = 9 WHERE id = 'a1'")
    assert s.verify_all() == ["b1"] and s.checkpoint(5, truth) == ["b1"]
    s.reset_buckets(["b1"])
    s.apply_ops([(6 + i, "b1", "put", "account", f"a{i}", 1, {"name": f"n{i}"}) for i in range(5)])
    assert s.verify_all() == [] and s.checkpoint(10, truth) == [] and s.cursor == 10


def test_a_store_opened_empty_skips_the_first_full_verification(tmp_path: Path) -> None:
    """A first download: every row was hashed by this process a moment ago, so its first
    checkpoint trusts the sums; the periodic full verification still comes, and still catches a
    row corrupted behind the triggers' back."""
    now = [1000.0]
    s = LocalStore(tmp_path / "s.sqlite", full_verify_every=2, full_verify_min_s=60.0, clock=lambda: now[0])
    s.apply_ops([(i + 1, "b1", "put", "account", f"a{i}", 1, {"name": f"n{i}"}) for i in range(20)])
    truth = server_sums(s)
    assert s.checkpoint(1, truth) == [] and s.full_verifications == 0
    s.db.execute("UPDATE membership SET version = version + 7 WHERE id = 'a3'")
    assert s.checkpoint(2, truth) == [] and s.full_verifications == 0, "not yet the interval"
    now[0] += 60.0
    assert s.checkpoint(3, truth) == ["b1"] and s.full_verifications == 1
