"""The shared test vectors (shared/test-vectors/*.json) against the Python side: the protocol
codec, the checksum, the device store's handling of batch results, and the server's attribute
validation. The TypeScript SDK's tests read the same files, so the two SDKs cannot drift."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conflict_service.validation import EntityMeta, check_fields
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p
from offsync_shared.checksum import combine, op_hash
from offsync_shared.domain import attributes

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "test-vectors"


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


FRAMES = _load("frames.json")
CHECKSUMS = _load("checksums.json")
OUTCOMES = _load("conflict_outcomes.json")
ATTRIBUTES = _load("attribute_values.json")

_NAMES = {
    p.Metadata: "metadata",
    p.Welcome: "welcome",
    p.Ops: "ops",
    p.Checkpoint: "checkpoint",
    p.Drop: "drop",
    p.Reset: "reset",
    p.Result: "result",
    p.Error: "error",
    p.Ping: "ping",
    p.Pong: "pong",
}


def _client_frame(f: dict[str, Any]) -> p.ClientFrame:
    t = f["type"]
    if t == "hello":
        return p.Hello(
            f["device_id"], f["cursor"], f["checksums"], f.get("token"), tuple(f.get("features", ())), f.get("app")
        )
    if t == "upload":
        changes = tuple(
            p.Change(c["seq"], c["op"], c["entity"], c["id"], c.get("base_version"), c["fields"]) for c in f["changes"]
        )
        return p.Upload(f["batch_id"], changes)
    if t == "refetch":
        return p.Refetch(tuple(f["buckets"]))
    if t == "auth":
        return p.Auth(f["token"])
    return p.Ping(f.get("t")) if t == "ping" else p.Pong(f.get("t"))


def _plain(v: Any) -> Any:
    """A decoded frame as JSON-shaped data: the frame's type added, nulls left out."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        d: dict[str, Any] = {"type": _NAMES[type(v)]} if type(v) in _NAMES else {}
        for f in dataclasses.fields(v):
            x = getattr(v, f.name)
            if x is not None:
                d[f.name] = _plain(x)
        if isinstance(v, p.Error):
            d["retriable"] = v.retriable
        return d
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@pytest.mark.parametrize("case", FRAMES["client"], ids=lambda c: c["frame"]["type"])
def test_client_frames_encode_to_the_shared_bytes(case: dict[str, Any]) -> None:
    assert p.encode(_client_frame(case["frame"])).decode() == case["wire"]
    # and the gateway reads them back
    assert p.decode_client(case["wire"])


@pytest.mark.parametrize("case", FRAMES["server"], ids=lambda c: json.loads(c["wire"])["type"])
def test_server_frames_decode_as_shared(case: dict[str, Any]) -> None:
    assert _plain(p.decode_server(case["wire"])) == case["decoded"]


@pytest.mark.parametrize("case", FRAMES["server_bad"], ids=lambda c: c["wire"][:30])
def test_bad_server_frames_are_refused_with_the_shared_code(case: dict[str, Any]) -> None:
    with pytest.raises(p.FrameError) as exc:
        p.decode_server(case["wire"])
    assert exc.value.code == case["code"]


def test_checksums() -> None:
    for h in CHECKSUMS["hashes"]:
        assert op_hash(h["entity"], h["id"], h["version"]) == h["hash"]
    for s in CHECKSUMS["sums"]:
        total = 0
        for x in s["hashes"]:
            total = combine(total, x)
        for x in s.get("minus", []):
            total = combine(total, 0, x)
        assert total == s["checksum"]


@pytest.mark.parametrize("scenario", OUTCOMES["scenarios"], ids=lambda s: s["name"])
def test_conflict_outcomes(scenario: dict[str, Any]) -> None:
    st = LocalStore()
    st.apply_ops([tuple(o) for o in OUTCOMES["ops"]])
    for op, entity, rid, fields in scenario["edits"]:
        if op == "create":
            st.create(entity, fields, rid=rid)
        elif op == "update":
            st.update(entity, rid, fields)
        else:
            st.delete(entity, rid)
    batch = st.next_batch(500)
    exp = scenario["expect"]
    sent = [] if batch is None else json.loads(p.encode(batch))["changes"]
    assert sent == exp["sent"]
    problems: list[dict[str, Any]] = []
    if batch is not None:
        results = tuple(
            p.ChangeResult(
                seq=r["seq"],
                entity=sent[r["seq"]]["entity"],
                id=sent[r["seq"]]["id"],
                status=r["status"],
                version=r.get("version"),
                record=r.get("record"),
                code=r.get("code"),
                message=r.get("message"),
            )
            for r in scenario["results"]
        )
        problems = [{"status": x.status, "code": x.code} for x in st.apply_result(p.Result(batch.batch_id, results))]
    assert problems == exp["problems"]
    assert {i: st.get("account", i) for i in exp["visible"]} == exp["visible"]
    assert {i: (st.server_record("account", i) or {}).get("version") for i in exp["server_versions"]} == exp[
        "server_versions"
    ]
    assert len(st.pending()) == exp["pending"]
    assert [{"id": c.id, "status": c.status, "code": c.code} for c in st.conflicts()] == exp["conflicts"]


@pytest.mark.parametrize("case", ATTRIBUTES["values"], ids=lambda c: f"{c['spec']['type']}:{c['value']!r}"[:40])
def test_attribute_values_validate_as_shared(case: dict[str, Any]) -> None:
    try:
        stored = attributes.coerce(case["spec"]["type"], case["value"], case["spec"])
    except attributes.InvalidValue as exc:
        assert str(exc) == case["error"]
    else:
        assert case["error"] is None and stored == case["stored"]


@pytest.mark.parametrize("case", ATTRIBUTES["records"], ids=lambda c: json.dumps(c["fields"])[:40])
def test_record_fields_validate_as_shared(case: dict[str, Any]) -> None:
    ent = ATTRIBUTES["entity"]
    err, _, stored = check_fields(
        EntityMeta(ent["name"], "user_or_team", ent["attributes"]), case["fields"], creating=case["creating"]
    )
    assert (None if err is None else {"field": err.field, "message": err.message}) == case["error"]
    assert (stored if err is None else None) == case["stored"]
