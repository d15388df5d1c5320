"""The device's local SQLite store: server records, bucket membership (with per-op hashes for
checksums), the sync cursor, the outbox of offline changes, and the log of conflicts/rejections.

`records` holds only what the server confirmed; what the user sees is that plus the pending
outbox changes laid on top (:meth:`LocalStore.get`), so a download never overwrites an offline
edit and dropping server data never drops a pending change (failure mode 8). Downloads are
written a page at a time in one transaction with executemany.
"""

from __future__ import annotations

import builtins
import functools
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from offsync_shared import protocol as p
from offsync_shared.checksum import MOD, op_hash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    entity TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, attributes TEXT NOT NULL,
    PRIMARY KEY (entity, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS membership (
    entity TEXT NOT NULL, id TEXT NOT NULL, bucket TEXT NOT NULL, version INTEGER NOT NULL,
    hash INTEGER NOT NULL, PRIMARY KEY (entity, id, bucket)) WITHOUT ROWID;
-- The buckets held as of the last checkpoint. Their sums live in bucket_sums; checksum is no
-- longer written (0 for new rows) and is kept only so stores of any version share one schema.
CREATE TABLE IF NOT EXISTS buckets (id TEXT PRIMARY KEY, checksum INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
    base_version INTEGER, fields TEXT NOT NULL, batch_id TEXT, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_record ON outbox(entity, id);
CREATE TABLE IF NOT EXISTS conflicts (
    n INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT, seq INTEGER, entity TEXT, id TEXT,
    status TEXT, code TEXT, message TEXT, local TEXT, server TEXT, at REAL);
"""

# PRAGMA user_version of a store file with the current schema; older files are upgraded on open.
_SCHEMA_VERSION = 1

# Per-bucket sum (kept reduced mod 2**32 so any hash a raw write puts in cannot overflow; the sign
# may be negative, readers reduce once more) and member count (a bucket with none left is not
# held). Triggers, not Python, so every write to membership counts, whoever makes it. The SDK
# writes with upserts, not INSERT OR REPLACE (a delete and an insert, two trigger runs).
_SUMS_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS bucket_sums (
    bucket TEXT PRIMARY KEY, total INTEGER NOT NULL, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS membership_sum_insert AFTER INSERT ON membership BEGIN
    INSERT INTO bucket_sums(bucket, total, n) VALUES (NEW.bucket, NEW.hash % {MOD}, 1)
    ON CONFLICT(bucket) DO UPDATE SET total = (total + excluded.total) % {MOD}, n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS membership_sum_delete AFTER DELETE ON membership BEGIN
    UPDATE bucket_sums SET total = (total - OLD.hash % {MOD}) % {MOD}, n = n - 1 WHERE bucket = OLD.bucket;
END;
CREATE TRIGGER IF NOT EXISTS membership_sum_update AFTER UPDATE ON membership
WHEN NEW.bucket = OLD.bucket BEGIN
    UPDATE bucket_sums SET total = (total - OLD.hash % {MOD} + NEW.hash % {MOD}) % {MOD} WHERE bucket = NEW.bucket;
END;
CREATE TRIGGER IF NOT EXISTS membership_sum_move AFTER UPDATE ON membership
WHEN NEW.bucket IS NOT OLD.bucket BEGIN
    UPDATE bucket_sums SET total = (total - OLD.hash % {MOD}) % {MOD}, n = n - 1 WHERE bucket = OLD.bucket;
    INSERT INTO bucket_sums(bucket, total, n) VALUES (NEW.bucket, NEW.hash % {MOD}, 1)
    ON CONFLICT(bucket) DO UPDATE SET total = (total + excluded.total) % {MOD}, n = n + 1;
END;
"""

# Brings a store of any older version up to date; refilling bucket_sums from membership makes it
# idempotent (two processes opening one old file both end with the right sums).
_UPGRADE = f"""
BEGIN IMMEDIATE;
{_SUMS_SCHEMA}
DELETE FROM bucket_sums;
INSERT INTO bucket_sums(bucket, total, n)
    SELECT bucket, SUM(hash % {MOD}) % {MOD}, count(*) FROM membership GROUP BY bucket;
PRAGMA user_version = {_SCHEMA_VERSION};
COMMIT;
"""

# The statements of the download path, shared by the bulk pages (apply_ops) and live frames.
_PUT_RECORD = (
    "INSERT INTO records(entity, id, version, attributes) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(entity, id) DO UPDATE SET version = excluded.version, attributes = excluded.attributes "
    "WHERE excluded.version >= records.version"
)
# An upsert, not INSERT OR REPLACE: the replaced row must fire the update trigger.
_PUT_MEMBER = (
    "INSERT INTO membership(entity, id, bucket, version, hash) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(entity, id, bucket) DO UPDATE SET version = excluded.version, hash = excluded.hash"
)
# Rows per multi-row INSERT: one statement execution per this many rows instead of one per row
# (a download's pages store ~20 % faster; well under SQLite's bound-parameter limit).
_ROWS_PER_INSERT = 250


@functools.cache
def _rows_sql(single: str, rows: int) -> str:
    """``single`` (an INSERT with one ``VALUES (?, ...)`` row) for ``rows`` rows."""
    head, sep, tail = single.partition(" VALUES (")
    one, _, rest = tail.partition(")")
    return f"{head}{sep[:-1]}{', '.join(['(' + one + ')'] * rows)}{rest}"


def _insert_rows(db: sqlite3.Connection, single: str, rows: list[tuple[Any, ...]]) -> None:
    """``executemany(single, rows)``, ``_ROWS_PER_INSERT`` rows per execution: the same rows in
    the same order, each conflict resolved against the rows before it, each trigger fired."""
    full = len(rows) - len(rows) % _ROWS_PER_INSERT
    if full:
        many = _rows_sql(single, _ROWS_PER_INSERT)
        db.executemany(
            many,
            ([v for row in rows[k : k + _ROWS_PER_INSERT] for v in row] for k in range(0, full, _ROWS_PER_INSERT)),
        )
    if full < len(rows):
        db.executemany(single, rows[full:])


_REMOVE_MEMBER = "DELETE FROM membership WHERE entity = ? AND id = ? AND bucket = ?"
_GC_RECORD = (
    "DELETE FROM records WHERE entity = ? AND id = ? "
    "AND NOT EXISTS (SELECT 1 FROM membership m WHERE m.entity = ? AND m.id = ?)"
)
_RESUME = (
    "INSERT INTO meta(key, value) VALUES ('cursor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value "
    "WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)"
)
_SET_CURSOR = (
    "INSERT INTO meta(key, value) VALUES ('cursor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value "
    "WHERE meta.value IS NOT excluded.value"
)
# The sums and the held buckets in one statement (half the per-statement overhead of two).
_SUMS_AND_HELD = "SELECT bucket, total, 0 FROM bucket_sums UNION ALL SELECT id, 0, 1 FROM buckets"
_HOLD = "INSERT OR IGNORE INTO buckets(id, checksum) VALUES (?, 0)"
# The full verification: per bucket, the sum of its member rows' stored hashes next to the
# trigger-kept sum, and how many rows hold a stored hash that is not their own, derived afresh
# from (entity, id, version) by the registered op_hash. A bucket passes only with none of those:
# then every stored hash is the recomputed one, so the stored sum is the recomputed sum, and
# op_hash runs once per row, not twice (it is most of the verification's cost).
_FULL_SUMS = (
    f"SELECT m.bucket, SUM(m.hash % {MOD}) % {MOD}, count(*), "
    f"coalesce(s.total, 0) % {MOD}, coalesce(s.n, 0), "
    "SUM(m.hash != op_hash(m.entity, m.id, m.version)) "
    "FROM membership m LEFT JOIN bucket_sums s ON s.bucket = m.bucket GROUP BY m.bucket"
)
# How many checkpoints pass between two full verifications (the first of a store is one): a
# live change costs O(changed rows); every this many, one costs O(held rows) as well...
FULL_VERIFY_EVERY = 200
# ...and at least this long apart: counted in checkpoints alone, a device receiving 25 changes a
# second recomputed every row it holds every 8 s (5-25 % of a fanout device worker's samples).
FULL_VERIFY_MIN_S = 60.0
_UNHOLD = "DELETE FROM buckets WHERE id = ?"


@dataclass(frozen=True, slots=True)
class PendingChange:
    seq: int
    op: p.ChangeOp
    entity: str
    id: str
    base_version: int | None
    fields: dict[str, Any]
    batch_id: str | None


@dataclass(frozen=True, slots=True)
class ConflictEntry:
    batch_id: str
    entity: str
    id: str
    status: str
    code: str | None
    message: str | None
    local: dict[str, Any]
    server: dict[str, Any] | None


class LocalStore:
    def __init__(
        self,
        path: str | Path = ":memory:",
        full_verify_every: int | None = FULL_VERIFY_EVERY,
        full_verify_min_s: float = FULL_VERIFY_MIN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = str(path)
        self.db = self._connect()
        # None: checkpoints trust the trigger-kept sums alone (verify_all() still recomputes).
        self.full_verify_every = None if full_verify_every is None else max(1, full_verify_every)
        # Checkpoints verified since the last full verification; the first one of a store opened
        # with rows is full.
        self._since_full = self.full_verify_every or 0
        self.full_verify_min_s = full_verify_min_s
        self._clock = clock
        self._full_at = float("-inf")
        self.full_verifications = 0
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        if self.db.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
            self._upgrade()
        if self.db.execute("SELECT 1 FROM membership LIMIT 1").fetchone() is None:
            # Nothing on disk to doubt: the first full verification exists for rows written before
            # this open. A first download (every row just hashed here) waits for the periodic one.
            self._since_full = 0
            self._full_at = clock()
        self.on_local_change: Callable[[], None] | None = None
        # The background writer (store_soon): a thread and a connection of its own, made on first use.
        self._writer_pool: ThreadPoolExecutor | None = None
        self._writer_db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.create_function("op_hash", 3, op_hash, deterministic=True)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-65536")
        # So an INSERT OR REPLACE into membership over this connection (raw SQL, say) fires the
        # delete trigger for the row it replaces and bucket_sums stays right.
        db.execute("PRAGMA recursive_triggers=ON")
        return db

    def _upgrade(self) -> None:
        try:
            self.db.executescript(_UPGRADE)
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._writer_pool is not None:
            self._writer_pool.submit(self._close_writer).result()
            self._writer_pool.shutdown()
            self._writer_pool = None
        self.db.close()

    def _close_writer(self) -> None:
        if self._writer_db is not None:
            self._writer_db.close()
            self._writer_db = None

    # ------------------------------------------------------------------------------ meta ----
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def cursor(self) -> int:
        return int(self.meta("cursor", "0") or 0)

    def device_id(self) -> str:
        did = self.meta("device_id")
        if did is None:
            did = str(uuid.uuid4())
            self.set_meta("device_id", did)
        return did

    # ------------------------------------------------------------------------- download ----
    def hold_buckets(self, buckets: Iterable[str]) -> None:
        """Remember the session's buckets, so a resumed
        download reports them in its hello and is not re-sent from scratch."""
        self.db.executemany(_HOLD, [(b,) for b in buckets])

    def apply_ops(self, ops: Iterable[p.OpRow], resume: int | None = None) -> int:
        """Store one page of ops in one transaction (and the resume cursor with it, if given);
        returns how many were applied."""
        return self.apply_frame(ops, resume)[0]

    def apply_frame(
        self, ops: Iterable[p.OpRow], resume: int | None = None, checkpoint: p.Checkpoint | None = None
    ) -> tuple[int, list[str]]:
        """Store one ops frame, and verify the checkpoint riding along with it, in one transaction.
        The ops commit whatever the checkpoint says; its cursor and checksums are stored only if
        every bucket agrees. Returns (ops applied, buckets that disagree)."""
        return self.apply_pages([(ops, resume)], checkpoint)

    def apply_pages(
        self, pages: Sequence[tuple[Iterable[p.OpRow], int | None]], checkpoint: p.Checkpoint | None = None
    ) -> tuple[int, list[str]]:
        """``apply_frame`` for several ops frames in order, (ops, resume) each, in one transaction:
        a download's pages cost one commit for several (each commit rewrites every index page the
        page's random keys touched). The last resume cursor given is stored with them."""
        return self._pages_in(self.db, "BEGIN", pages, checkpoint)

    def _pages_in(
        self,
        db: sqlite3.Connection,
        begin: str,
        pages: Sequence[tuple[Iterable[p.OpRow], int | None]],
        checkpoint: p.Checkpoint | None,
    ) -> tuple[int, list[str]]:
        db.execute(begin)
        try:
            n = 0
            for ops, resume in pages:
                n += self._store_ops(db, ops, resume)
            bad = self._verify_checkpoint(db, checkpoint.cursor, checkpoint.checksums) if checkpoint is not None else []
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return n, bad

    def store_soon(self, pages: Sequence[tuple[Iterable[p.OpRow], int | None]]) -> Future[int]:
        """``apply_pages`` without a checkpoint, on a writer thread with a connection of its own:
        SQLite writes (without the GIL) while the caller parses the next frames. The caller
        waits for the returned future before its next write that must follow these pages.
        Other connections' writes wait for this one's commit as SQLite's lock decides; a
        store in memory (one connection only) is written here and now."""
        if self.path in ("", ":memory:") or self.path.startswith("file::memory:"):
            done: Future[int] = Future()
            try:
                done.set_result(self.apply_pages(pages)[0])
            except Exception as exc:  # noqa: BLE001 - the caller sees it from the future, as below
                done.set_exception(exc)
            return done
        if self._writer_pool is None:
            self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="offsync-store")
        return self._writer_pool.submit(self._write_pages, pages)

    def _write_pages(self, pages: Sequence[tuple[Iterable[p.OpRow], int | None]]) -> int:
        if self._writer_db is None:
            self._writer_db = self._connect()
        return self._pages_in(self._writer_db, "BEGIN IMMEDIATE", pages, None)[0]

    @staticmethod
    def _store_ops(db: sqlite3.Connection, ops: Iterable[p.OpRow], resume: int | None) -> int:
        puts: list[tuple[str, str, int, str]] = []
        members: list[tuple[str, str, str, int, int]] = []
        removes: list[tuple[str, str, str]] = []
        dumps = orjson.dumps
        for _op_id, bucket, op, entity, rid, version, attrs in ops:
            if op == "put":
                puts.append((entity, rid, version, dumps(attrs).decode()))
                members.append((entity, rid, bucket, version, op_hash(entity, rid, version)))
            else:
                removes.append((entity, rid, bucket))
        if puts:
            # A record may already be newer locally (a batch result arrived first).
            _insert_rows(db, _PUT_RECORD, puts)
            _insert_rows(db, _PUT_MEMBER, members)
        if removes:
            db.executemany(_REMOVE_MEMBER, removes)
            LocalStore._gc(db, {(e, i) for e, i, _ in removes})
        if resume is not None:
            db.execute(_RESUME, (str(resume),))
        return len(puts) + len(removes)

    @staticmethod
    def _gc(db: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> None:
        """Forget server records no bucket holds any more (pending outbox rows are untouched)."""
        db.executemany(_GC_RECORD, [(e, i, e, i) for e, i in keys])

    def _forget_buckets(self, buckets: Iterable[str]) -> None:
        db = self.db
        bs = list(buckets)
        db.execute("BEGIN")
        try:
            keys: set[tuple[str, str]] = set()
            for b in bs:
                keys.update(db.execute("SELECT entity, id FROM membership WHERE bucket = ?", (b,)).fetchall())
                # The bucket empties, so its sum restarts from nothing (the triggers below find no
                # row): any drift (say a downgraded SDK wrote here) goes too, so a refetch repairs.
                db.execute("DELETE FROM bucket_sums WHERE bucket = ?", (b,))
                db.execute("DELETE FROM membership WHERE bucket = ?", (b,))
            self._gc(db, keys)
            db.executemany(_UNHOLD, [(b,) for b in bs])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def drop_buckets(self, buckets: Iterable[str]) -> None:
        """The user lost these buckets: delete their records unless another bucket holds them."""
        self._forget_buckets(buckets)

    def reset_buckets(self, buckets: Iterable[str]) -> None:
        """The server re-sends these buckets from scratch."""
        self._forget_buckets(buckets)

    def local_checksums(self, buckets: Iterable[str] | None = None) -> dict[str, int]:
        """What the store holds per bucket: the given buckets, else every bucket with a member or
        held since the last checkpoint."""
        rows = self.db.execute("SELECT bucket, total, n FROM bucket_sums").fetchall()
        sums = {b: t % MOD for b, t, _ in rows}
        if buckets is None:
            names = {b for b, _, n in rows if n > 0} | {r[0] for r in self.db.execute("SELECT id FROM buckets")}
        else:
            names = set(buckets)
        return {b: sums.get(b, 0) for b in names}

    def checkpoint(self, cursor: int, checksums: dict[str, int]) -> list[str]:
        """Verify the server's checksums; store the cursor if they agree. Returns the buckets that
        disagree (the caller asks the server to re-send exactly those)."""
        db = self.db
        db.execute("BEGIN")
        try:
            bad = self._verify_checkpoint(db, cursor, checksums)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return bad

    def _verify_checkpoint(self, db: sqlite3.Connection, cursor: int, checksums: dict[str, int]) -> list[str]:
        """The checkpoint, from the trigger-kept sums (O(buckets), whatever the rows held); every
        ``full_verify_every``-th (and at least ``full_verify_min_s`` after the last) also
        recomputes every held row, so a row corrupted behind the triggers' back (a version
        rewritten, a write by a connection without them) is noticed while connected, and its
        bucket is reported as disagreeing (the server re-sends it)."""
        self._since_full += 1
        drifted: list[str] = []
        if (
            self.full_verify_every is not None
            and self._since_full >= self.full_verify_every
            and self._clock() - self._full_at >= self.full_verify_min_s
        ):
            self._since_full = 0
            self._full_at = self._clock()
            self.full_verifications += 1
            drifted = self._drifted(db)
        bad = self._verify(db, cursor, checksums) if not drifted else []
        if drifted:
            return sorted(set(drifted) | set(self._disagreeing(db, checksums)))
        return bad

    @staticmethod
    def _drifted(db: sqlite3.Connection) -> list[str]:
        """Buckets whose member rows no longer add up to the sum the triggers kept."""
        out = []
        for b, recomputed, n, kept, kept_n, wrong_hashes in db.execute(_FULL_SUMS):
            if recomputed % MOD != kept % MOD or n != kept_n or wrong_hashes:  # kept may be negative
                out.append(b)
        known = {b for (b,) in db.execute("SELECT DISTINCT bucket FROM membership")}
        out.extend(b for (b,) in db.execute("SELECT bucket FROM bucket_sums WHERE n != 0") if b not in known)
        return out

    @staticmethod
    def _disagreeing(db: sqlite3.Connection, checksums: dict[str, int]) -> list[str]:
        sums = {b: v for b, v, is_held in db.execute(_SUMS_AND_HELD) if not is_held}
        return [b for b, c in checksums.items() if sums.get(b, 0) % MOD != c]

    def verify_all(self) -> list[str]:
        """The full verification on its own (e.g. at start-up or from a timer): the drifted buckets."""
        return sorted(self._drifted(self.db))

    @staticmethod
    def _verify(db: sqlite3.Connection, cursor: int, checksums: dict[str, int]) -> list[str]:
        """The checkpoint inside the caller's transaction. On agreement the held buckets become
        exactly those of `checksums`; only buckets that came or went and the moved cursor are
        written."""
        sums: dict[str, int] = {}
        held: set[str] = set()
        for b, v, is_held in db.execute(_SUMS_AND_HELD):
            if is_held:
                held.add(b)
            else:
                sums[b] = v
        bad = [b for b, c in checksums.items() if sums.get(b, 0) % MOD != c]
        if bad:
            return sorted(bad)
        # Only the set of held buckets is stored (a live frame usually changes none).
        came = [(b,) for b in checksums if b not in held]
        if came:
            db.executemany(_HOLD, came)
        gone = [(b,) for b in held if b not in checksums]
        if gone:
            db.executemany(_UNHOLD, gone)
        db.execute(_SET_CURSOR, (str(cursor),))
        return []

    def held_checksums(self) -> dict[str, int]:
        """What the hello reports: the buckets of the last checkpoint, with what is actually held."""
        rows = self.db.execute("SELECT b.id, s.total FROM buckets b LEFT JOIN bucket_sums s ON s.bucket = b.id")
        return {b: (t or 0) % MOD for b, t in rows}

    def forget_all(self) -> None:
        """Server-side reset: drop every server record and the cursor; the outbox stays."""
        db = self.db
        db.execute("BEGIN")
        for t in ("records", "bucket_sums", "membership", "buckets"):
            db.execute(f"DELETE FROM {t}")
        db.execute("DELETE FROM meta WHERE key = 'cursor'")
        db.execute("COMMIT")

    # -------------------------------------------------------------------------- reading ----
    def server_record(self, entity: str, rid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT version, attributes FROM records WHERE entity = ? AND id = ?", (entity, rid)
        ).fetchone()
        if row is None:
            return None
        return {"version": row[0], "attributes": orjson.loads(row[1])}

    def get(self, entity: str, rid: str) -> dict[str, Any] | None:
        """The record as the user sees it: the server's state with pending changes applied."""
        base = self.server_record(entity, rid)
        attrs = dict(base["attributes"]) if base else None
        for ch in self.pending_for(entity, rid):
            if ch.op == "create":
                attrs = dict(ch.fields)
            elif ch.op == "update":
                attrs = {**(attrs or {}), **ch.fields}
            else:
                attrs = None
        return attrs

    def list(self, entity: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        ids = [
            r[0]
            for r in self.db.execute("SELECT id FROM records WHERE entity = ? ORDER BY id LIMIT ?", (entity, limit))
        ]
        ids += [
            r[0]
            for r in self.db.execute("SELECT DISTINCT id FROM outbox WHERE entity = ? AND op = 'create'", (entity,))
        ]
        out = []
        for rid in dict.fromkeys(ids):
            rec = self.get(entity, rid)
            if rec is not None:
                out.append((rid, rec))
        return out

    def count(self, entity: str | None = None) -> int:
        if entity is None:
            return int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])
        return int(self.db.execute("SELECT count(*) FROM records WHERE entity = ?", (entity,)).fetchone()[0])

    # ------------------------------------------------------------------- offline changes ----
    def _notify(self) -> None:
        if self.on_local_change is not None:
            self.on_local_change()

    def create(self, entity: str, fields: dict[str, Any], rid: str | None = None) -> str:
        """An offline create with a client-generated id (a retry can never duplicate it)."""
        rid = rid or str(uuid.uuid4())
        self.db.execute(
            "INSERT INTO outbox(op, entity, id, base_version, fields, batch_id, created_at) VALUES ('create', ?, ?, NULL, ?, NULL, ?)",
            (entity, rid, orjson.dumps(fields).decode(), time.time()),
        )
        self._notify()
        return rid

    def update(self, entity: str, rid: str, fields: dict[str, Any]) -> None:
        """An offline update. Consecutive unsent updates of one record merge into one change
        (later values win per field), so quick successive edits lose nothing (failure mode 9)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            last = db.execute(
                "SELECT seq, op, fields, batch_id FROM outbox WHERE entity = ? AND id = ? ORDER BY seq DESC LIMIT 1",
                (entity, rid),
            ).fetchone()
            if last is not None and last[3] is None and last[1] in ("create", "update"):
                merged = {**orjson.loads(last[2]), **fields}
                db.execute("UPDATE outbox SET fields = ? WHERE seq = ?", (orjson.dumps(merged).decode(), last[0]))
            else:
                if last is not None and last[1] == "delete":
                    raise ValueError(f"{entity} {rid} is deleted locally")
                base = self._base_version(entity, rid)
                if base is None and last is None:
                    raise KeyError(f"no {entity} {rid} in the local store")
                db.execute(
                    "INSERT INTO outbox(op, entity, id, base_version, fields, batch_id, created_at) VALUES ('update', ?, ?, ?, ?, NULL, ?)",
                    (entity, rid, base, orjson.dumps(fields).decode(), time.time()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._notify()

    def delete(self, entity: str, rid: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            unsent = db.execute(
                "SELECT seq, op FROM outbox WHERE entity = ? AND id = ? AND batch_id IS NULL ORDER BY seq",
                (entity, rid),
            ).fetchall()
            sent = db.execute(
                "SELECT 1 FROM outbox WHERE entity = ? AND id = ? AND batch_id IS NOT NULL", (entity, rid)
            ).fetchone()
            if unsent and unsent[0][1] == "create" and sent is None:
                # Never reached the server: forgetting the create is the whole delete.
                db.execute("DELETE FROM outbox WHERE entity = ? AND id = ?", (entity, rid))
            else:
                db.execute(
                    "DELETE FROM outbox WHERE entity = ? AND id = ? AND batch_id IS NULL AND op = 'update'",
                    (entity, rid),
                )
                db.execute(
                    "INSERT INTO outbox(op, entity, id, base_version, fields, batch_id, created_at) VALUES ('delete', ?, ?, ?, '{}', NULL, ?)",
                    (entity, rid, self._base_version(entity, rid), time.time()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._notify()

    def _base_version(self, entity: str, rid: str) -> int | None:
        row = self.db.execute("SELECT version FROM records WHERE entity = ? AND id = ?", (entity, rid)).fetchone()
        return int(row[0]) if row else None

    def _rows(self, where: str, args: tuple[Any, ...]) -> builtins.list[PendingChange]:
        return [
            PendingChange(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6])
            for r in self.db.execute(
                f"SELECT seq, op, entity, id, base_version, fields, batch_id FROM outbox WHERE {where} ORDER BY seq",
                args,
            )
        ]

    def pending(self) -> builtins.list[PendingChange]:
        return self._rows("1 = 1", ())

    def pending_for(self, entity: str, rid: str) -> builtins.list[PendingChange]:
        return self._rows("entity = ? AND id = ?", (entity, rid))

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def has_pending(self) -> bool:
        return self.db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None

    def awaits_answer(self, batch_id: str) -> bool:
        """Whether a batch of this id was sent and is not answered yet (an answer can arrive twice:
        the gateway's copy from the topic and the stored one for the resent batch)."""
        return self.db.execute("SELECT 1 FROM outbox WHERE batch_id = ? LIMIT 1", (batch_id,)).fetchone() is not None

    def next_batch(self, max_changes: int) -> p.Upload | None:
        """The batch to send: the one already in flight (resent with the same id, so the server
        applies it once), else the oldest unsent changes under a new batch id."""
        db = self.db
        row = db.execute("SELECT batch_id FROM outbox WHERE batch_id IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            seqs = [
                r[0]
                for r in db.execute(
                    "SELECT seq FROM outbox WHERE batch_id IS NULL ORDER BY seq LIMIT ?", (max_changes,)
                )
            ]
            if not seqs:
                return None
            batch_id = str(uuid.uuid4())
            db.execute("BEGIN")
            db.executemany("UPDATE outbox SET batch_id = ? WHERE seq = ?", [(batch_id, s) for s in seqs])
            db.execute("COMMIT")
        else:
            batch_id = row[0]
        rows = self._rows("batch_id = ?", (batch_id,))
        return p.Upload(
            batch_id=batch_id,
            changes=tuple(
                p.Change(seq=i, op=c.op, entity=c.entity, id=c.id, base_version=c.base_version, fields=c.fields)
                for i, c in enumerate(rows)
            ),
        )

    def apply_result(self, result: p.Result) -> builtins.list[p.ChangeResult]:
        """Apply the server's answer to a batch; returns the conflicts and rejections."""
        rows = self._rows("batch_id = ?", (result.batch_id,))
        if not rows:
            return []  # an answer we already applied (e.g. delivered twice)
        by_seq = {r.seq: r for r in result.results}
        problems: builtins.list[p.ChangeResult] = []
        db = self.db
        db.execute("BEGIN")
        try:
            for i, ch in enumerate(rows):
                res = by_seq.get(i)
                if res is None:
                    continue
                if res.status == "applied":
                    self._applied(db, ch, res)
                else:
                    problems.append(res)
                    self._problem(db, result.batch_id, ch, res)
                db.execute("DELETE FROM outbox WHERE seq = ?", (ch.seq,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return problems

    def _applied(self, db: sqlite3.Connection, ch: PendingChange, res: p.ChangeResult) -> None:
        if ch.op == "delete":
            db.execute("DELETE FROM records WHERE entity = ? AND id = ?", (ch.entity, ch.id))
            return
        if res.version is None:
            return
        old = self.server_record(ch.entity, ch.id)
        attrs = ch.fields if ch.op == "create" or old is None else {**old["attributes"], **ch.fields}
        db.execute(
            "INSERT INTO records(entity, id, version, attributes) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(entity, id) DO UPDATE SET version = excluded.version, attributes = excluded.attributes "
            "WHERE excluded.version >= records.version",
            (ch.entity, ch.id, res.version, orjson.dumps(attrs).decode()),
        )
        # Later unsent edits of this record were made on top of this change.
        db.execute(
            "UPDATE outbox SET base_version = ? WHERE entity = ? AND id = ? AND seq > ? AND (base_version IS NULL OR base_version = ?)",
            (res.version, ch.entity, ch.id, ch.seq, ch.base_version),
        )

    def _problem(self, db: sqlite3.Connection, batch_id: str, ch: PendingChange, res: p.ChangeResult) -> None:
        db.execute(
            "INSERT INTO conflicts(batch_id, seq, entity, id, status, code, message, local, server, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                batch_id,
                ch.seq,
                ch.entity,
                ch.id,
                res.status,
                res.code,
                res.message,
                orjson.dumps({"op": ch.op, "base_version": ch.base_version, "fields": ch.fields}).decode(),
                orjson.dumps(res.record).decode() if res.record is not None else None,
                time.time(),
            ),
        )
        rec = res.record
        if res.status == "conflict" and rec is not None and rec.get("version") is not None:
            # The server's winning record replaces ours.
            if rec.get("deleted"):
                db.execute("DELETE FROM records WHERE entity = ? AND id = ?", (ch.entity, ch.id))
            else:
                db.execute(
                    "INSERT INTO records(entity, id, version, attributes) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(entity, id) DO UPDATE SET version = excluded.version, attributes = excluded.attributes "
                    "WHERE excluded.version >= records.version",
                    (ch.entity, ch.id, int(rec["version"]), orjson.dumps(rec.get("attributes") or {}).decode()),
                )

    def clear_conflicts(self, ids: Iterable[str] | None = None) -> int:
        """Forget logged conflicts/rejections (of these record ids, or all); returns how many.

        The log is for a person to review; clearing it changes no record and no pending change.
        """
        if ids is None:
            cur = self.db.execute("DELETE FROM conflicts")
        else:
            wanted = list(ids)
            cur = self.db.execute(f"DELETE FROM conflicts WHERE id IN ({','.join('?' * len(wanted))})", wanted)
        return cur.rowcount

    def conflicts(self) -> builtins.list[ConflictEntry]:
        return [
            ConflictEntry(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]), orjson.loads(r[7]) if r[7] else None)
            for r in self.db.execute(
                "SELECT batch_id, entity, id, status, code, message, local, server FROM conflicts ORDER BY n"
            )
        ]
