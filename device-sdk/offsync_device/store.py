"""The device's local SQLite store: server records, bucket membership (with per-op hashes for
checksums), the sync cursor, the outbox of offline changes, and the log of conflicts/rejections.

`records` holds only what the server confirmed; what the user sees is that plus the pending
outbox changes laid on top (:meth:`LocalStore.get`), so a download never overwrites an offline
edit and dropping server data never drops a pending change (failure mode 8). Downloads are
written a page at a time in one transaction with executemany.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
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


@dataclass(frozen=True, slots=True)
class PendingChange:
    seq: int
    op: str
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
    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-65536")
        self.db.executescript(_SCHEMA)
        self.on_local_change: Callable[[], None] | None = None

    def close(self) -> None:
        self.db.close()

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
        """Remember the session's buckets (checksum unknown until a checkpoint), so a resumed
        download reports them in its hello and is not re-sent from scratch."""
        self.db.executemany("INSERT OR IGNORE INTO buckets(id, checksum) VALUES (?, 0)", [(b,) for b in buckets])

    def apply_ops(self, ops: Iterable[p.OpRow], resume: int | None = None) -> int:
        """Store one page of ops in one transaction (and the resume cursor with it, if given);
        returns how many were applied."""
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
        db = self.db
        db.execute("BEGIN")
        try:
            if puts:
                # A record may already be newer locally (a batch result arrived first).
                db.executemany(
                    "INSERT INTO records(entity, id, version, attributes) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(entity, id) DO UPDATE SET version = excluded.version, attributes = excluded.attributes "
                    "WHERE excluded.version >= records.version",
                    puts,
                )
                db.executemany("INSERT OR REPLACE INTO membership VALUES (?, ?, ?, ?, ?)", members)
            if removes:
                db.executemany("DELETE FROM membership WHERE entity = ? AND id = ? AND bucket = ?", removes)
                self._gc(db, {(e, i) for e, i, _ in removes})
            if resume is not None:
                db.execute(
                    "INSERT INTO meta(key, value) VALUES ('cursor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value "
                    "WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                    (str(resume),),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(puts) + len(removes)

    @staticmethod
    def _gc(db: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> None:
        """Forget server records no bucket holds any more (pending outbox rows are untouched)."""
        db.executemany(
            "DELETE FROM records WHERE entity = ? AND id = ? "
            "AND NOT EXISTS (SELECT 1 FROM membership m WHERE m.entity = ? AND m.id = ?)",
            [(e, i, e, i) for e, i in keys],
        )

    def _forget_buckets(self, buckets: Iterable[str]) -> None:
        db = self.db
        bs = list(buckets)
        db.execute("BEGIN")
        try:
            keys: set[tuple[str, str]] = set()
            for b in bs:
                keys.update(db.execute("SELECT entity, id FROM membership WHERE bucket = ?", (b,)).fetchall())
                db.execute("DELETE FROM membership WHERE bucket = ?", (b,))
            self._gc(db, keys)
            db.executemany("DELETE FROM buckets WHERE id = ?", [(b,) for b in bs])
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
        rows = self.db.execute("SELECT bucket, SUM(hash) FROM membership GROUP BY bucket").fetchall()
        sums = {b: int(s) % MOD for b, s in rows}
        names = set(sums) | {r[0] for r in self.db.execute("SELECT id FROM buckets")}
        if buckets is not None:
            names = set(buckets)
        return {b: sums.get(b, 0) for b in names}

    def checkpoint(self, cursor: int, checksums: dict[str, int]) -> list[str]:
        """Verify the server's checksums; store the cursor if they agree. Returns the buckets that
        disagree (the caller asks the server to re-send exactly those)."""
        local = self.local_checksums(checksums)
        bad = sorted(b for b, c in checksums.items() if local.get(b, 0) != c)
        if bad:
            return bad
        db = self.db
        db.execute("BEGIN")
        db.execute("DELETE FROM buckets")
        db.executemany("INSERT INTO buckets(id, checksum) VALUES (?, ?)", list(checksums.items()))
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('cursor', ?)", (str(cursor),))
        db.execute("COMMIT")
        return []

    def held_checksums(self) -> dict[str, int]:
        """What the hello reports: the buckets of the last checkpoint, with what is actually held."""
        names = [r[0] for r in self.db.execute("SELECT id FROM buckets")]
        return self.local_checksums(names) if names else {}

    def forget_all(self) -> None:
        """Server-side reset: drop every server record and the cursor; the outbox stays."""
        db = self.db
        db.execute("BEGIN")
        for t in ("records", "membership", "buckets"):
            db.execute(f"DELETE FROM {t}")
        db.execute("DELETE FROM meta WHERE key = 'cursor'")
        db.execute("COMMIT")

    # -------------------------------------------------------------------------- reading ----
    def server_record(self, entity: str, rid: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT version, attributes FROM records WHERE entity = ? AND id = ?", (entity, rid)).fetchone()
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
        ids = [r[0] for r in self.db.execute("SELECT id FROM records WHERE entity = ? ORDER BY id LIMIT ?", (entity, limit))]
        ids += [r[0] for r in self.db.execute("SELECT DISTINCT id FROM outbox WHERE entity = ? AND op = 'create'", (entity,))]
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
                "SELECT seq, op FROM outbox WHERE entity = ? AND id = ? AND batch_id IS NULL ORDER BY seq", (entity, rid)
            ).fetchall()
            sent = db.execute("SELECT 1 FROM outbox WHERE entity = ? AND id = ? AND batch_id IS NOT NULL", (entity, rid)).fetchone()
            if unsent and unsent[0][1] == "create" and sent is None:
                # Never reached the server: forgetting the create is the whole delete.
                db.execute("DELETE FROM outbox WHERE entity = ? AND id = ?", (entity, rid))
            else:
                db.execute(
                    "DELETE FROM outbox WHERE entity = ? AND id = ? AND batch_id IS NULL AND op = 'update'", (entity, rid)
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

    def _rows(self, where: str, args: tuple[Any, ...]) -> list[PendingChange]:
        return [
            PendingChange(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), r[6])
            for r in self.db.execute(
                f"SELECT seq, op, entity, id, base_version, fields, batch_id FROM outbox WHERE {where} ORDER BY seq", args
            )
        ]

    def pending(self) -> list[PendingChange]:
        return self._rows("1 = 1", ())

    def pending_for(self, entity: str, rid: str) -> list[PendingChange]:
        return self._rows("entity = ? AND id = ?", (entity, rid))

    def has_pending(self) -> bool:
        return self.db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None

    def next_batch(self, max_changes: int) -> p.Upload | None:
        """The batch to send: the one already in flight (resent with the same id, so the server
        applies it once), else the oldest unsent changes under a new batch id."""
        db = self.db
        row = db.execute("SELECT batch_id FROM outbox WHERE batch_id IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            seqs = [r[0] for r in db.execute("SELECT seq FROM outbox WHERE batch_id IS NULL ORDER BY seq LIMIT ?", (max_changes,))]
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
                p.Change(seq=i, op=c.op, entity=c.entity, id=c.id, base_version=c.base_version, fields=c.fields)  # type: ignore[arg-type]
                for i, c in enumerate(rows)
            ),
        )

    def apply_result(self, result: p.Result) -> list[p.ChangeResult]:
        """Apply the server's answer to a batch; returns the conflicts and rejections."""
        rows = self._rows("batch_id = ?", (result.batch_id,))
        if not rows:
            return []  # an answer we already applied (e.g. delivered twice)
        by_seq = {r.seq: r for r in result.results}
        problems: list[p.ChangeResult] = []
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

    def conflicts(self) -> list[ConflictEntry]:
        return [
            ConflictEntry(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]), orjson.loads(r[7]) if r[7] else None)
            for r in self.db.execute(
                "SELECT batch_id, entity, id, status, code, message, local, server FROM conflicts ORDER BY n"
            )
        ]
