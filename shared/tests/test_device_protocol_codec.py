"""The device protocol codec: table of valid/invalid client frames, and round trips of every
frame type (hypothesis)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offsync_shared import protocol as p

VALID = [
    ("hello-minimal", {"type": "hello", "device_id": "d"}, p.Hello(device_id="d")),
    (
        "hello-full",
        {"type": "hello", "version": 1, "device_id": "d", "cursor": 7, "checksums": {"b": 5}, "token": "t"},
        p.Hello(device_id="d", cursor=7, checksums={"b": 5}, token="t"),
    ),
    (
        "hello-features",
        {"type": "hello", "device_id": "d", "features": ["ops_checkpoint", "from-the-future"]},
        p.Hello(device_id="d", features=("ops_checkpoint", "from-the-future")),
    ),
    (
        "upload",
        {
            "type": "upload",
            "batch_id": "b1",
            "changes": [
                {"seq": 0, "op": "create", "entity": "task", "id": "x", "fields": {"a": 1}},
                {"seq": 1, "op": "update", "entity": "task", "id": "y", "base_version": 3, "fields": {}},
                {"seq": 2, "op": "delete", "entity": "task", "id": "z", "base_version": 2},
            ],
        },
        p.Upload(
            "b1",
            (
                p.Change(0, "create", "task", "x", None, {"a": 1}),
                p.Change(1, "update", "task", "y", 3, {}),
                p.Change(2, "delete", "task", "z", 2, {}),
            ),
        ),
    ),
    ("refetch", {"type": "refetch", "buckets": ["a", "b"]}, p.Refetch(("a", "b"))),
    ("auth", {"type": "auth", "token": "t"}, p.Auth("t")),
    ("ping", {"type": "ping", "t": 1.5}, p.Ping(1.5)),
    ("pong-empty", {"type": "pong"}, p.Pong()),
]


@pytest.mark.parametrize("obj,frame", [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_client_frames(obj: dict[str, Any], frame: Any) -> None:
    assert p.decode_client(orjson.dumps(obj)) == frame


INVALID = [
    ("not-json", b"{", p.ERR_BAD_FRAME),
    ("binary", b"\x00\xff", p.ERR_BAD_FRAME),
    ("array", b"[]", p.ERR_BAD_FRAME),
    ("no-type", b"{}", p.ERR_BAD_FRAME),
    ("type-not-string", b'{"type": 3}', p.ERR_BAD_FRAME),
    ("unknown-type", b'{"type": "merge"}', p.ERR_UNKNOWN_TYPE),
    ("server-type-from-client", b'{"type": "ops"}', p.ERR_UNKNOWN_TYPE),
    ("hello-no-device", b'{"type": "hello"}', p.ERR_BAD_FRAME),
    ("hello-bad-version", b'{"type": "hello", "device_id": "d", "version": 2}', p.ERR_BAD_FRAME),
    ("hello-negative-cursor", b'{"type": "hello", "device_id": "d", "cursor": -1}', p.ERR_BAD_FRAME),
    ("hello-bool-cursor", b'{"type": "hello", "device_id": "d", "cursor": true}', p.ERR_BAD_FRAME),
    ("hello-checksum-too-big", b'{"type": "hello", "device_id": "d", "checksums": {"b": 4294967296}}', p.ERR_BAD_FRAME),
    ("upload-changes-not-list", b'{"type": "upload", "batch_id": "b", "changes": {}}', p.ERR_BAD_FRAME),
    (
        "upload-unknown-op",
        b'{"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "merge", "entity": "e", "id": "i"}]}',
        p.ERR_BAD_FRAME,
    ),
    (
        "upload-update-without-base",
        b'{"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "update", "entity": "e", "id": "i"}]}',
        p.ERR_BAD_FRAME,
    ),
    (
        "upload-fields-not-object",
        b'{"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "create", "entity": "e", "id": "i", "fields": []}]}',
        p.ERR_BAD_FRAME,
    ),
    (
        "upload-long-id",
        orjson.dumps(
            {"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "create", "entity": "e", "id": "i" * 201}]}
        ),
        p.ERR_BAD_FRAME,
    ),
    ("upload-no-batch-id", b'{"type": "upload", "changes": []}', p.ERR_BAD_FRAME),
    ("hello-features-not-list", b'{"type": "hello", "device_id": "d", "features": "ops_checkpoint"}', p.ERR_BAD_FRAME),
    ("hello-features-not-strings", b'{"type": "hello", "device_id": "d", "features": [1]}', p.ERR_BAD_FRAME),
    ("refetch-not-list", b'{"type": "refetch", "buckets": "b"}', p.ERR_BAD_FRAME),
    ("ping-t-string", b'{"type": "ping", "t": "now"}', p.ERR_BAD_FRAME),
    # NUL can never be stored (PostgreSQL text): refused at the edge, wherever it hides.
    ("nul-batch-id", b'{"type": "upload", "batch_id": "b\\u0000", "changes": []}', p.ERR_BAD_FRAME),
    (
        "nul-record-id",
        b'{"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "create", "entity": "e", "id": "\\u0000"}]}',
        p.ERR_BAD_FRAME,
    ),
    (
        "nul-field-key",
        b'{"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "create", "entity": "e", "id": "i",'
        b' "fields": {"a\\u0000": 1}}]}',
        p.ERR_BAD_FRAME,
    ),
    (
        "nul-field-value",
        b'{"type": "upload", "batch_id": "b", "changes": [{"seq": 0, "op": "create", "entity": "e", "id": "i",'
        b' "fields": {"a": ["x", {"y": "\\u0000"}]}}]}',
        p.ERR_BAD_FRAME,
    ),
    ("nul-device-id", b'{"type": "hello", "device_id": "d\\u0000"}', p.ERR_BAD_FRAME),
    ("nul-checksum-bucket", b'{"type": "hello", "device_id": "d", "checksums": {"\\u0000": 1}}', p.ERR_BAD_FRAME),
    ("invalid-utf8-bytes", b'{"type": "hello", "device_id": "\xff\xfe"}', p.ERR_BAD_FRAME),
    ("overlong-utf8", b'{"type": "hello", "device_id": "\xc0\xaf"}', p.ERR_BAD_FRAME),
    ("lone-surrogate-escape", b'{"type": "hello", "device_id": "\\ud800"}', p.ERR_BAD_FRAME),
]


@pytest.mark.parametrize("raw,code", [v[1:] for v in INVALID], ids=[v[0] for v in INVALID])
def test_invalid_client_frames(raw: bytes, code: str) -> None:
    with pytest.raises(p.FrameError) as exc:
        p.decode_client(raw)
    assert exc.value.code == code


# Text a client may send: any Unicode scalar value but NUL (PostgreSQL text cannot hold it).
chars = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00")
ident = st.text(chars, min_size=1, max_size=30)
u63 = st.integers(0, 2**63 - 1)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(chars, max_size=20),
)
fields = st.dictionaries(st.text(chars, max_size=10), json_scalar, max_size=5)
change = st.builds(
    lambda seq, op, e, i, b, f: p.Change(seq, op, e, i, b if op != "create" or b is not None else None, f),
    u63,
    st.sampled_from(p.CHANGE_OPS),
    ident,
    ident,
    u63,
    fields,
)
client_frames = st.one_of(
    st.builds(
        p.Hello,
        ident,
        u63,
        st.dictionaries(ident, st.integers(0, 2**32 - 1), max_size=5),
        st.one_of(st.none(), ident),
        st.lists(ident, max_size=4).map(tuple),
    ),
    st.builds(p.Upload, ident, st.lists(change, max_size=5).map(tuple)),
    st.builds(p.Refetch, st.lists(ident, max_size=5).map(tuple)),
    st.builds(p.Auth, ident),
    st.builds(p.Ping, st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))),
    st.builds(p.Pong, st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False))),
)
op_row = st.tuples(u63, ident, st.sampled_from(["put", "remove"]), ident, ident, u63, st.one_of(st.none(), fields))
results = st.builds(
    p.ChangeResult,
    u63,
    ident,
    ident,
    st.sampled_from(["applied", "conflict", "rejected"]),
    st.one_of(st.none(), u63),
    st.one_of(st.none(), fields),
    st.one_of(st.none(), ident),
    st.one_of(st.none(), ident),
)
checkpoint = st.builds(p.Checkpoint, u63, st.dictionaries(ident, st.integers(0, 2**32 - 1), max_size=5))
server_frames = st.one_of(
    st.builds(
        p.Ops, st.lists(op_row, max_size=5), u63, u63, st.one_of(st.none(), u63), st.one_of(st.none(), checkpoint)
    ),
    checkpoint,
    st.builds(p.Drop, st.lists(ident, max_size=4).map(tuple), ident),
    st.builds(p.Reset, st.lists(ident, max_size=4).map(tuple)),
    st.builds(p.Result, ident, st.lists(results, max_size=4).map(tuple)),
    st.builds(
        p.Error,
        st.sampled_from(p.ERROR_CODES),
        st.text(max_size=30),
        st.one_of(st.none(), ident),
        st.one_of(st.none(), st.floats(0, 100)),
    ),
    st.builds(
        p.Welcome,
        ident,
        st.lists(ident, max_size=3).map(tuple),
        st.floats(0, 100),
        st.dictionaries(ident, st.integers(0, 10**6), max_size=3),
    ),
)


@settings(max_examples=300, deadline=None)
@given(client_frames)
def test_client_frames_round_trip(frame: Any) -> None:
    if isinstance(frame, p.Upload) and any(c.op == "update" and c.base_version is None for c in frame.changes):
        return
    assert p.decode_client(p.encode(frame)) == frame


@settings(max_examples=300, deadline=None)
@given(server_frames)
def test_server_frames_round_trip(frame: Any) -> None:
    back = p.decode_server(p.encode(frame))
    if isinstance(frame, p.Ops):
        assert back == p.Ops([tuple(r) for r in frame.ops], frame.done, frame.total, frame.resume, frame.checkpoint)
    else:
        assert back == frame


def test_old_readers_see_ops_with_a_checkpoint_as_plain_ops() -> None:
    """Backward compatibility: the checkpoint is an extra key; every older field is unchanged."""
    frame = p.Ops([(3, "b", "put", "e", "i", 1, {"a": 1})], 1, 1, checkpoint=p.Checkpoint(3, {"b": 7}))
    obj = orjson.loads(p.encode(frame))
    assert obj == {
        "type": "ops",
        "ops": [[3, "b", "put", "e", "i", 1, {"a": 1}]],
        "done": 1,
        "total": 1,
        "checkpoint": {"cursor": 3, "checksums": {"b": 7}},
    }
    assert "features" not in orjson.loads(p.encode(p.Hello("d")))


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200),
        st.recursive(
            json_scalar,
            lambda c: st.one_of(
                st.lists(c, max_size=4),
                st.dictionaries(
                    st.sampled_from(["type", "device_id", "changes", "batch_id", "buckets", "seq", "op"]), c, max_size=5
                ),
            ),
            max_leaves=20,
        ).map(orjson.dumps),
    )
)
def test_decoding_junk_only_ever_raises_frame_error(raw: Any) -> None:
    for decode in (p.decode_client, p.decode_server):
        try:
            decode(raw)
        except p.FrameError as exc:
            assert exc.code in p.ERROR_CODES


@settings(max_examples=300, deadline=None)
@given(client_frames, st.data())
def test_a_nul_anywhere_in_a_client_frame_is_refused(frame: Any, data: st.DataObject) -> None:
    """Put one NUL into any string of a valid frame: the codec refuses the frame, never passes it on."""
    obj = orjson.loads(p.encode(frame))
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            if isinstance(v, str) and k != "type":
                paths.append((node, k))
            walk(v)

    walk(obj)
    if not paths:
        return
    node, key = data.draw(st.sampled_from(paths))
    at = data.draw(st.integers(0, len(node[key])))
    node[key] = node[key][:at] + "\x00" + node[key][at:]
    with pytest.raises(p.FrameError) as exc:
        p.decode_client(orjson.dumps(obj))
    assert exc.value.code == p.ERR_BAD_FRAME


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    frame = p.decode_client(b'{"type": "hello", "device_id": "d\\\\u0000"}')
    assert isinstance(frame, p.Hello) and frame.device_id == "d\\u0000"


def test_an_oversized_upload_is_refused_before_its_changes_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 5: 20,500 changes in one frame cost the gateway 60-150 ms of validation before
    it looked at the count. Now the count is checked first: not one change is validated."""
    validated = 0
    real = p._change

    def counting(i: int, c: Any) -> p.Change:
        nonlocal validated
        validated += 1
        return real(i, c)

    monkeypatch.setattr(p, "_change", counting)
    changes = [{"seq": i, "op": "create", "entity": "e", "id": f"r{i}"} for i in range(20_500)]
    raw = orjson.dumps({"type": "upload", "batch_id": "big", "changes": changes})
    with pytest.raises(p.FrameError) as exc:
        p.decode_client(raw, max_changes=500)
    assert (exc.value.code, exc.value.ref, validated) == (p.ERR_BATCH_TOO_LARGE, "big", 0)
    p.decode_client(orjson.dumps({"type": "upload", "batch_id": "ok", "changes": changes[:500]}), max_changes=500)
    assert validated == 500


def test_codec_is_pure() -> None:
    tree = ast.parse(Path(p.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"aiokafka", "faust", "asyncpg", "fastapi", "starlette", "websockets", "uvicorn"}


@settings(max_examples=300, deadline=None)
@given(st.lists(op_row, min_size=1, max_size=5), checkpoint)
def test_prebuilt_ops_bytes_equal_the_codecs(rows: list[Any], cp: p.Checkpoint) -> None:
    """Live fanout's prebuilt frame (op rows joined as the database encoded them, the frame around
    them filled into a template) is byte for byte what ``encode`` makes of the same Ops frame."""
    ops_json = p.join_op_rows(orjson.dumps(r).decode() for r in rows)
    assert ops_json == orjson.dumps(rows)
    frame = p.Ops(ops=orjson.Fragment(ops_json), done=len(rows), total=len(rows), checkpoint=cp)
    assert p.encode_ops_with_checkpoint(ops_json, len(rows), cp) == p.encode(frame)


def test_only_the_codec_writes_frames() -> None:
    """The wire format has one home: no other module of the gateway or the SDK spells a frame."""
    root = Path(p.__file__).resolve().parents[2]
    for path in [*root.glob("sync-service/sync_service/*.py"), *root.glob("device-sdk/offsync_device/*.py")]:
        text = path.read_text()
        assert '"type":"' not in text and '{"type": "ops"' not in text, f"{path} builds a frame by hand"
