"""A download's ops frames are stored several at a time (client.HOLD_OPS): one transaction for the
pages held and the frame that ends them, in the order they came; never lost when the connection
ends or the stream pauses."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from offsync_device import client
from offsync_device.client import Device, SyncInterrupted
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.checksum import MOD, op_hash


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, data: str) -> None:
        self.sent.append(data)


def page(start: int, n: int, bucket: str = "b1") -> list[p.OpRow]:
    return [(i, bucket, "put", "account", f"a{i:06d}", 1, {"name": f"n{i}"}) for i in range(start, start + n)]


def sums(rows: list[p.OpRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, b, _, e, i, v, _ in rows:
        out[b] = (out.get(b, 0) + op_hash(e, i, v)) % MOD
    return out


def commits(s: LocalStore) -> list[str]:
    statements: list[str] = []
    s.db.set_trace_callback(statements.append)
    return statements


async def test_pages_are_held_and_stored_with_the_frame_that_ends_them() -> None:
    s = LocalStore()
    stored: list[int] = []
    progress: list[tuple[int, int]] = []
    device = Device(
        "ws://x",
        s,
        "t",
        device_id="d",
        on_ops=lambda ops: stored.append(s.count()),
        on_progress=lambda done, total: progress.append((done, total)),
    )
    device.hold_ops = 5
    ws = FakeSocket()
    statements = commits(s)
    rows = page(1, 6)
    assert not device._on_frame(ws, p.Ops(ops=rows[0:2], done=2, total=6, resume=2), False)  # type: ignore[arg-type]
    assert not device._on_frame(ws, p.Ops(ops=rows[2:4], done=4, total=6, resume=4), False)  # type: ignore[arg-type]
    assert s.count() == 0 and s.cursor == 0 and statements.count("COMMIT") == 0, "held, not stored yet"
    cp = p.Checkpoint(6, sums(rows))
    assert device._on_frame(ws, p.Ops(ops=rows[4:6], done=6, total=6, checkpoint=cp), False)  # type: ignore[arg-type]
    assert statements.count("BEGIN") == 1 and statements.count("COMMIT") == 1, "the three frames: one transaction"
    assert s.count() == 6 and s.cursor == 6 and device.report.ops == 6 and device.report.checkpoints == 1
    assert stored == [6, 6, 6], "on_ops runs once the frame's ops are stored"
    assert progress == [(2, 6), (4, 6), (6, 6)]


async def test_held_ops_reaching_the_limit_are_stored_with_their_resume_cursor() -> None:
    s = LocalStore()
    device = Device("ws://x", s, "t", device_id="d")
    device.hold_ops = 5
    ws = FakeSocket()
    statements = commits(s)
    for k in range(3):  # 2 + 2 held; the third frame reaches 6 >= 5: all three stored together
        device._on_frame(ws, p.Ops(ops=page(1 + 2 * k, 2), done=2 * k + 2, total=9, resume=2 * k + 1), False)  # type: ignore[arg-type]
    assert s.count() == 6 and s.cursor == 5 and statements.count("COMMIT") == 1
    device._on_frame(ws, p.Ops(ops=page(7, 2), done=8, total=9, resume=7), False)  # type: ignore[arg-type]
    assert s.count() == 6, "held again"


async def test_any_other_frame_stores_the_held_ops_first() -> None:
    s = LocalStore()
    device = Device("ws://x", s, "t", device_id="d")
    ws = FakeSocket()
    device._on_frame(ws, p.Ops(ops=page(1, 3, "b1") + page(4, 2, "b2"), done=5, total=9), False)  # type: ignore[arg-type]
    assert s.count() == 0
    device._on_frame(ws, p.Drop(("b2",), reason="removed"), False)  # type: ignore[arg-type]
    assert s.count() == 3, "the ops came before the drop, so the drop removes b2's"
    assert s.local_checksums() == {"b1": sums(page(1, 3))["b1"]}


async def test_held_ops_are_stored_when_the_stream_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "HOLD_IDLE_S", 0.01)
    s = LocalStore()
    device = Device("ws://x", s, "t", device_id="d")
    device._on_frame(FakeSocket(), p.Ops(ops=page(1, 3), done=3, total=9, resume=3), False)  # type: ignore[arg-type]
    assert s.count() == 0
    async with asyncio.timeout(5):
        while s.count() != 3:
            await asyncio.sleep(0.01)
    assert s.cursor == 3


async def test_frames_held_when_the_connection_ends_are_kept_and_the_download_resumes_after_them() -> None:
    rows = page(1, 30)
    hellos: list[dict[str, Any]] = []

    async def server(ws: ServerConnection) -> None:
        hello = orjson.loads(await ws.recv())
        hellos.append(hello)
        await ws.send(
            p.encode(p.Welcome(user_id="u", buckets=("b1",), heartbeat_s=30, limits={"max_changes": 100})).decode()
        )
        if len(hellos) == 1:  # two pages of ten, then the server goes away mid-download
            for k in range(2):
                part = rows[10 * k : 10 * k + 10]
                await ws.send(p.encode(p.Ops(ops=part, done=10 * k + 10, total=30, resume=part[-1][0])).decode())
            await ws.close(1001, "going_away: server draining; reconnect and resume")
            return
        rest = [r for r in rows if r[0] > hello["cursor"]]
        await ws.send(
            p.encode(p.Ops(ops=rest, done=len(rest), total=len(rest), checkpoint=p.Checkpoint(30, sums(rows)))).decode()
        )
        await ws.wait_closed()

    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        s = LocalStore()
        device = Device(f"ws://127.0.0.1:{port}/v1/sync", s, "t", device_id="d")
        with pytest.raises(SyncInterrupted):
            await device.sync(timeout=10, max_attempts=1)
        assert s.count() == 20 and s.cursor == 20, "both pages stored although no checkpoint came"
        report = await device.sync(timeout=10, max_attempts=1)
    assert hellos[1]["cursor"] == 20
    assert s.count() == 30 and s.cursor == 30 and report.checkpoints == 1


async def test_a_file_store_writes_held_runs_on_its_writer_thread(tmp_path: Any) -> None:
    """A download into a store file: each held run is written by the store's writer thread while
    the next frames are parsed; the checkpoint after them waits for it and sees every row, and
    on_ops still reports the frames in order, once stored."""
    s = LocalStore(tmp_path / "d.sqlite")
    stored: list[int] = []
    device = Device("ws://x", s, "t", device_id="d", on_ops=lambda ops: stored.append(ops[0][0]))
    device.hold_ops = 4
    ws = FakeSocket()
    rows = page(1, 12)
    for k in range(5):  # frames of two: runs of 1-4 and 5-8 go to the writer, 9-10 is held
        device._on_frame(ws, p.Ops(ops=rows[2 * k : 2 * k + 2], done=2 * k + 2, total=12, resume=2 * k + 2), False)  # type: ignore[arg-type]
    async with asyncio.timeout(5):  # the writer's run is reported on the loop once written
        while stored != [1, 3, 5, 7]:
            await asyncio.sleep(0.01)
    assert s._writer_pool is not None and s.cursor == 8
    cp = p.Checkpoint(12, sums(rows))
    assert device._on_frame(ws, p.Ops(ops=rows[10:12], done=12, total=12, checkpoint=cp), False)  # type: ignore[arg-type]
    assert s.count() == 12 and s.cursor == 12 and device.report.ops == 12 and device.report.checkpoints == 1
    assert stored == [1, 3, 5, 7, 9, 11]
    s.close()
    assert LocalStore(tmp_path / "d.sqlite").count() == 12


async def test_the_next_frame_waits_for_the_writer_and_an_app_edit_meanwhile_is_kept(tmp_path: Any) -> None:
    s = LocalStore(tmp_path / "d.sqlite")
    device = Device("ws://x", s, "t", device_id="d")
    device.hold_ops = 1
    ws = FakeSocket()
    rows = page(1, 2000)
    device._on_frame(ws, p.Ops(ops=rows, done=2000, total=2000, resume=2000), False)  # type: ignore[arg-type]
    rid = s.create("account", {"name": "made offline during the download"})  # the app's own connection
    device._on_frame(ws, p.Drop(("b2",), reason="removed"), False)  # type: ignore[arg-type]
    assert device._writing is None and device.report.ops == 2000 and s.count() == 2000
    assert s.get("account", rid) == {"name": "made offline during the download"} and s.has_pending()


async def test_a_failed_write_on_the_writer_thread_ends_the_session(tmp_path: Any) -> None:
    s = LocalStore(tmp_path / "d.sqlite")
    failures: list[BaseException] = []
    device = Device("ws://x", s, "t", device_id="d")
    device._fail = failures.append
    device.hold_ops = 1
    s.db.execute("DROP TABLE records")  # what a broken store file would do to the writer
    try:  # raised here when the writer has failed already, else handed to the session's _fail
        device._on_frame(FakeSocket(), p.Ops(ops=page(1, 3), done=3, total=9, resume=3), False)  # type: ignore[arg-type]
    except sqlite3.OperationalError as exc:
        failures.append(exc)
    async with asyncio.timeout(5):
        while not failures:
            await asyncio.sleep(0.01)
    assert "records" in str(failures[0]) and device._writing is None
