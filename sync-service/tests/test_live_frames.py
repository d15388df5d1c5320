"""The fanout fast path's encodings: frames framed once for every device must be exactly what
the usual path (p.encode, then websockets' framing) sends, byte for byte."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from offsync_shared import protocol as p
from sync_service.bucket_reads import BucketState, LiveBatch
from sync_service.live_fanout import LiveFrames
from sync_service.ws_frames import prebuilt_text, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_matches_websockets_at_each_length_boundary(size: int) -> None:
    payload = b"x" * size
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


@given(st.lists(st.text(max_size=300), max_size=4))
def test_prebuilt_text_is_the_frames_back_to_back(texts: list[str]) -> None:
    expected = b"".join(Frame(Opcode.TEXT, t.encode()).serialize(mask=False) for t in texts)
    assert prebuilt_text(texts) == expected


def _row(op_id: int, bucket: str, rid: str) -> tuple[int, str, str]:
    return op_id, bucket, orjson.dumps([op_id, bucket, "put", "territory", rid, 2, {"name": f"n {rid}"}]).decode()


BATCH = LiveBatch(
    rows=[_row(11, "bu-1", "t-1"), _row(12, "bu-2", "t-2"), _row(13, "bu-1", "t-3")],
    complete=True,
    states={"bu-1": BucketState(123, 13), "bu-2": BucketState(456, 12), "u-7": BucketState(789, 5)},
    members=set(),
)


def _build(since: int, mine: set[str], parts: dict | None = None) -> LiveFrames | None:
    by_bucket: dict[str, list[int]] = {}
    for i, (_, b, _) in enumerate(BATCH.rows):
        by_bucket.setdefault(b, []).append(i)
    return LiveFrames.build(BATCH, since, frozenset(mine), by_bucket, {} if parts is None else parts)


CASES = [
    ("two new ops, own bucket idle", 10, {"bu-1", "u-7"}, 2, 13),
    ("one new op", 12, {"bu-1", "u-7"}, 1, 13),
    ("other bucket", 10, {"bu-2"}, 1, 12),
    ("nothing new", 13, {"bu-1"}, 0, 13),
]


@pytest.mark.parametrize("since,mine,count,position", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("combined", [True, False], ids=["combined", "split"])
def test_live_wire_is_what_the_usual_path_sends(
    since: int, mine: set[str], count: int, position: int, combined: bool
) -> None:
    live = _build(since, mine)
    assert live is not None and live.count == count and live.position == position
    frames = live.combined() if combined else live.split()
    assert live.wire(combined) == b"".join(text_frame(f.text.encode()) for f in frames)
    decoded = [p.decode_server(f.text) for f in frames]
    cp = decoded[-1].checkpoint if isinstance(decoded[-1], p.Ops) else decoded[-1]
    assert isinstance(cp, p.Checkpoint) and cp.cursor == position
    assert cp.checksums == {b: BATCH.states[b].checksum for b in sorted(mine)}


def test_groups_with_the_same_new_rows_share_the_ops_part() -> None:
    parts: dict = {}
    a, b = _build(10, {"bu-1", "u-7"}, parts), _build(10, {"bu-1", "u-8"}, parts)
    assert a is not None and b is not None and a.ops is b.ops and len(parts) == 1
    assert a.checkpoint != b.checkpoint  # u-8 has no state: checksum 0


def test_a_bucket_ahead_of_the_read_is_not_served() -> None:
    # bu-1 reports op 13 but these sessions only get rows above 12 of bu-2: not consistent.
    assert _build(11, {"bu-2", "bu-1"}) is not None
    stale = LiveBatch(rows=BATCH.rows[:2], complete=True, states=BATCH.states, members=set())
    by_bucket = {"bu-1": [0], "bu-2": [1]}
    assert LiveFrames.build(stale, 10, frozenset({"bu-1"}), by_bucket, {}) is None
