"""decide_batch without a database: a table of batches (both org conflict settings; creates,
updates and deletes; missing and deleted records; rejections) → results and effects, and
properties checked against a naive reference for any batch of changes to a few records."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflict_service.batch_decisions import (
    ChangeItem,
    Facts,
    StoredRecord,
    check_items,
    decide_batch,
)
from conflict_service.policy import RecordState
from conflict_service.validation import EntityMeta
from offsync_shared.domain.org import Actor, Depth, Operation, Ownership
from offsync_shared.errors import Conflict, Forbidden, NotFound, PreconditionFailed, ValidationFailed
from offsync_shared.events.device_batches import Change

ORG_WIDE = {op: Depth.ORGANIZATION for op in Operation}
ALICE = Actor("alice", "sales", bu_subtree=frozenset({"sales"}), privileges={"*": ORG_WIDE})
READER = Actor(
    "reader", "sales", bu_subtree=frozenset({"sales"}), privileges={"*": {Operation.READ: Depth.ORGANIZATION}}
)
OWN_ONLY = Actor(
    "own", "sales", bu_subtree=frozenset({"sales"}), privileges={"*": {op: Depth.USER for op in Operation}}
)
DISABLED = Actor("dave", "sales", privileges={"*": ORG_WIDE}, enabled=False)
ACTORS = {a.user_id: a for a in (ALICE, READER, OWN_ONLY, DISABLED)}

ENTITIES = {
    "account": EntityMeta(
        "account",
        "user_or_team",
        {
            "name": {"type": "string", "required": True},
            "city": {"type": "string"},
            "parent": {"type": "lookup", "target": "account"},
        },
    )
}
BOBS = Ownership("bob", "user", "sales")


def stored(rid: str, version: int, deleted: bool = False, owner: Ownership = BOBS, **attrs: str) -> StoredRecord:
    attrs = attrs or {"name": rid}
    return StoredRecord("account", rid, RecordState(version, deleted, attrs, dict.fromkeys(attrs, version)), owner)


# a1 at version 2 (the device last saw 1); gone: a tombstone at version 3.
RECORDS = {r.id: r for r in (stored("a1", 2), stored("gone", 3, deleted=True))}


def ch(seq: int, op: str, rid: str, base: int | None = None, entity: str = "account", **fields: str) -> Change:
    return Change(seq=seq, op=op, entity=entity, id=rid, base_version=base, fields=fields)


def run(
    changes: list[Change], detection: bool, user: str = "alice", strict: bool = False, records: dict | None = None
) -> tuple[list[tuple[str, int | None, str | None]], object]:
    recs = RECORDS if records is None else records
    items = [ChangeItem(user, c, "d1", "b1", strict=strict) for c in changes]
    facts = Facts(
        conflict_detection=detection,
        entities=ENTITIES,
        actors=ACTORS,
        records={("account", k): v for k, v in recs.items()},
        lookup_owners={("account", k): v.owner for k, v in recs.items() if not v.state.deleted},
    )
    out = decide_batch(check_items(items, ENTITIES, facts.records.keys()), facts)
    return [(r.result.status, r.result.version, r.result.code) for r in out.results], out


@dataclass(frozen=True)
class Row:
    id: str
    changes: list[Change]
    detection: bool
    results: list[tuple[str, int | None, str | None]]
    written: dict[str, tuple[int, bool, dict[str, str]]]  # id -> final (version, deleted, attributes)
    conflicts: int
    sync_errors: list[str]  # their codes
    user: str = "alice"
    strict: bool = False


TABLE = [
    Row(
        "create-new",
        [ch(0, "create", "n1", name="N")],
        False,
        [("applied", 1, None)],
        {"n1": (1, False, {"name": "N"})},
        0,
        [],
    ),
    Row(
        "create-new-on",
        [ch(0, "create", "n1", name="N")],
        True,
        [("applied", 1, None)],
        {"n1": (1, False, {"name": "N"})},
        0,
        [],
    ),
    Row(
        "update-current-base",
        [ch(0, "update", "a1", 2, city="Oslo")],
        True,
        [("applied", 3, None)],
        {"a1": (3, False, {"name": "a1", "city": "Oslo"})},
        0,
        [],
    ),
    Row(
        "update-stale-off-client-wins",
        [ch(0, "update", "a1", 1, city="Oslo")],
        False,
        [("conflict", 3, "client_wins")],
        {"a1": (3, False, {"name": "a1", "city": "Oslo"})},
        1,
        [],
    ),
    Row(
        "update-stale-on-server-wins",
        [ch(0, "update", "a1", 1, city="Oslo")],
        True,
        [("conflict", 2, "server_wins")],
        {},
        1,
        ["server_wins"],
    ),
    Row(
        "delete-stale-off-client-wins",
        [ch(0, "delete", "a1", 1)],
        False,
        [("conflict", 3, "client_wins")],
        {"a1": (3, True, {"name": "a1"})},
        1,
        [],
    ),
    Row(
        "delete-stale-on-server-wins",
        [ch(0, "delete", "a1", 1)],
        True,
        [("conflict", 2, "server_wins")],
        {},
        1,
        ["server_wins"],
    ),
    Row(
        "delete-current",
        [ch(0, "delete", "a1", 2)],
        True,
        [("applied", 3, None)],
        {"a1": (3, True, {"name": "a1"})},
        0,
        [],
    ),
    Row(
        "update-missing",
        [ch(0, "update", "ghost", 1, city="x")],
        False,
        [("rejected", None, "not_found")],
        {},
        0,
        ["not_found"],
    ),
    Row("delete-missing", [ch(0, "delete", "ghost", 1)], True, [("rejected", None, "not_found")], {}, 0, ["not_found"]),
    Row("delete-deleted", [ch(0, "delete", "gone", 3)], True, [("applied", 3, "already_deleted")], {}, 0, []),
    Row(
        "update-deleted-off-revives",
        [ch(0, "update", "gone", 2, city="x")],
        False,
        [("conflict", 4, "client_wins")],
        {"gone": (4, False, {"name": "gone", "city": "x"})},
        1,
        [],
    ),
    Row(
        "update-deleted-on-stays-deleted",
        [ch(0, "update", "gone", 2, city="x")],
        True,
        [("conflict", 3, "server_wins")],
        {},
        1,
        ["server_wins"],
    ),
    Row(
        "chain-in-one-batch",
        [ch(0, "update", "a1", 2, city="A"), ch(1, "update", "a1", 2, city="B")],
        True,
        [("applied", 3, None), ("applied", 4, None)],
        {"a1": (4, False, {"name": "a1", "city": "B"})},
        0,
        [],
    ),
    Row(
        "create-then-update-then-delete",
        [ch(0, "create", "n1", name="N"), ch(1, "update", "n1", 1, city="C"), ch(2, "delete", "n1", 2)],
        True,
        [("applied", 1, None), ("applied", 2, None), ("applied", 3, None)],
        {"n1": (3, True, {"name": "N", "city": "C"})},
        0,
        [],
    ),
    Row(
        "create-over-someone-elses-on",
        [ch(0, "create", "a1", name="X")],
        True,
        [("conflict", 2, "server_wins")],
        {},
        1,
        ["server_wins"],
    ),
    Row(
        "unknown-entity",
        [ch(0, "create", "x", entity="nope", name="N")],
        False,
        [("rejected", None, "validation")],
        {},
        0,
        ["validation"],
    ),
    Row(
        "bad-value",
        [ch(0, "update", "a1", 2, nope="1")],
        False,
        [("rejected", None, "validation")],
        {},
        0,
        ["validation"],
    ),
    Row(
        "required-missing",
        [ch(0, "create", "n1", city="C")],
        False,
        [("rejected", None, "validation")],
        {},
        0,
        ["validation"],
    ),
    Row(
        "lookup-missing",
        [ch(0, "create", "n1", name="N", parent="ghost")],
        False,
        [("rejected", None, "validation")],
        {},
        0,
        ["validation"],
    ),
    Row(
        "lookup-created-earlier-in-batch",
        [ch(0, "create", "p", name="P"), ch(1, "create", "n1", name="N", parent="p")],
        False,
        [("applied", 1, None), ("applied", 1, None)],
        {"p": (1, False, {"name": "P"}), "n1": (1, False, {"name": "N", "parent": "p"})},
        0,
        [],
    ),
    Row(
        "read-only-user",
        [ch(0, "update", "a1", 2, city="x")],
        False,
        [("rejected", None, "forbidden")],
        {},
        0,
        ["forbidden"],
        user="reader",
    ),
    Row(
        "unreadable-is-missing",
        [ch(0, "update", "a1", 2, city="x")],
        False,
        [("rejected", None, "not_found")],
        {},
        0,
        ["not_found"],
        user="own",
    ),
    Row(
        "disabled-user",
        [ch(0, "create", "n1", name="N")],
        False,
        [("rejected", None, "forbidden")],
        {},
        0,
        ["forbidden"],
        user="dave",
    ),
    Row(
        "unknown-user",
        [ch(0, "create", "n1", name="N")],
        False,
        [("rejected", None, "forbidden")],
        {},
        0,
        ["forbidden"],
        user="who",
    ),
    Row(
        "strict-stale-update-refused",
        [ch(0, "update", "a1", 1, city="x")],
        False,
        [("rejected", None, "precondition_failed")],
        {},
        0,
        ["precondition_failed"],
        strict=True,
    ),
    Row(
        "strict-create-taken-refused",
        [ch(0, "create", "a1", name="x")],
        False,
        [("rejected", None, "conflict")],
        {},
        0,
        ["conflict"],
        strict=True,
    ),
    Row(
        "rejection-does-not-stop-the-rest",
        [ch(0, "update", "ghost", 1, city="x"), ch(1, "update", "a1", 2, city="y")],
        True,
        [("rejected", None, "not_found"), ("applied", 3, None)],
        {"a1": (3, False, {"name": "a1", "city": "y"})},
        0,
        ["not_found"],
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_decide_batch_table(row: Row) -> None:
    results, out = run(row.changes, row.detection, row.user, row.strict)
    assert results == row.results
    effects = out.effects  # type: ignore[attr-defined]
    written = {
        w.record.id: (w.record.state.version, w.record.state.deleted, dict(w.record.state.attributes))
        for w in effects.writes
    }
    assert written == row.written
    assert {w.modified_by for w in effects.writes} <= {row.user}
    assert len(effects.conflicts) == row.conflicts
    assert [e.code for e in effects.sync_errors] == row.sync_errors
    # one RecordChanged per version written; the last one is the state written
    versions = [(e.record.id, e.record.state.version) for e in effects.events]
    assert len(versions) == len(set(versions))
    for rid, (version, _, _) in row.written.items():
        assert max(v for i, v in versions if i == rid) == version


@pytest.mark.parametrize(
    "change,error,field",
    [
        (ch(0, "update", "ghost", 1, city="x"), NotFound, None),
        (ch(0, "update", "a1", 2, nope="x"), ValidationFailed, "nope"),
        (ch(0, "create", "n1", name="N", parent="ghost"), ValidationFailed, "parent"),
        (ch(0, "update", "a1", 1, city="x"), PreconditionFailed, None),
        (ch(0, "create", "a1", name="N"), Conflict, None),
    ],
    ids=["not-found", "validation", "lookup", "precondition", "conflict"],
)
def test_rejection_carries_its_error_class(change: Change, error: type, field: str | None) -> None:
    _, out = run([change], False, strict=True)
    [res] = out.results  # type: ignore[attr-defined]
    assert res.rejection is not None and res.rejection.error is error and res.rejection.field == field
    assert res.result.code == error.code
    exc = res.rejection.exception(3, change.id)
    assert isinstance(exc, error) and exc.details == {"index": 3, "id": change.id}
    assert str(exc).startswith(f"changes[3] ({change.id}): ")


def test_forbidden_is_its_class() -> None:
    _, out = run([ch(0, "update", "a1", 2, city="x")], False, user="reader")
    assert out.results[0].rejection.error is Forbidden  # type: ignore[attr-defined]


def test_inputs_are_not_changed() -> None:
    before = dict(RECORDS)
    run([ch(0, "update", "a1", 2, city="x"), ch(1, "delete", "a1", 3)], False)
    assert RECORDS == before and RECORDS["a1"].state.version == 2


# --- properties against a naive reference ---------------------------------------------------

IDS = ["r0", "r1", "r2"]


@st.composite
def batches(draw: st.DrawFn) -> tuple[dict[str, StoredRecord], list[Change]]:
    records = {}
    for rid in IDS:
        kind = draw(st.sampled_from(["missing", "live", "deleted"]))
        if kind != "missing":
            records[rid] = stored(rid, draw(st.integers(1, 4)), deleted=kind == "deleted")
    changes = []
    for seq in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["create", "update", "delete"]))
        rid = draw(st.sampled_from(IDS))
        fields = {} if op == "delete" else {"city": draw(st.sampled_from(["a", "b", "c"]))}
        if op == "create":
            fields["name"] = rid
        base = None if op == "create" else draw(st.integers(0, 5))
        changes.append(Change(seq=seq, op=op, entity="account", id=rid, base_version=base, fields=fields))
    return records, changes


def _reference(
    records: dict[str, StoredRecord], changes: list[Change], detection: bool
) -> dict[str, tuple[int, bool, dict[str, str]]]:
    """Final (version, deleted, attributes) per record: every change applied in order when the
    client wins; with conflict detection on, only changes based on the version they meet (or on
    the one the batch's previous change to the record was based on, then produced)."""
    state = {rid: (r.state.version, r.state.deleted, dict(r.state.attributes)) for rid, r in records.items()}
    created_here: set[str] = set()  # by this batch's user: a create repeated with the same values is a no-op
    chain: dict[str, tuple[int | None, int]] = {}
    for c in changes:
        cur = state.get(c.id)
        if c.op == "create":
            if cur is None:
                state[c.id] = (1, False, dict(c.fields))
                created_here.add(c.id)
                chain[c.id] = (None, 1)
                continue
            if c.id in created_here and not cur[1] and all(cur[2].get(k) == v for k, v in c.fields.items()):
                continue
            base = 0
        else:
            if cur is None:
                continue  # not found
            if c.op == "delete" and cur[1]:
                continue  # already deleted
            base = c.base_version if c.base_version is not None else cur[0]
            if c.id in chain and chain[c.id][0] == base:
                base = chain[c.id][1]
        if base != cur[0] and detection:
            continue  # server wins: nothing written
        attrs = dict(cur[2])
        if c.op != "delete":
            attrs.update(c.fields)
        state[c.id] = (cur[0] + 1, c.op == "delete", attrs)
        chain[c.id] = (c.base_version if c.op != "create" else None, cur[0] + 1)
    return {
        rid: s
        for rid, s in state.items()
        if rid not in records
        or s != (records[rid].state.version, records[rid].state.deleted, dict(records[rid].state.attributes))
    }


@settings(max_examples=300, deadline=None)
@given(batches(), st.booleans())
def test_decide_batch_matches_the_reference(
    batch: tuple[dict[str, StoredRecord], list[Change]], detection: bool
) -> None:
    records, changes = batch
    _, out = run(changes, detection, records=records)
    effects = out.effects  # type: ignore[attr-defined]
    written = {
        w.record.id: (w.record.state.version, w.record.state.deleted, dict(w.record.state.attributes))
        for w in effects.writes
    }
    assert written == _reference(records, changes, detection)
    results = out.results  # type: ignore[attr-defined]
    assert len(results) == len(changes)
    assert [r.result.seq for r in results] == [c.seq for c in changes]
    # every version a change produced is announced once, in increasing order per record
    for rid in IDS:
        versions = [e.record.state.version for e in effects.events if e.record.id == rid]
        start = records[rid].state.version if rid in records else 0
        assert versions == list(range(start + 1, start + 1 + len(versions)))
    # the conflicts log holds exactly the conflict results; the ledger exactly what did not make it as sent
    assert len(effects.conflicts) == sum(r.result.status == "conflict" for r in results)
    assert [e.item.change.seq for e in effects.sync_errors] == [r.result.seq for r in results if not r.applied_as_sent]
    if not detection:  # client wins: nothing is lost to a conflict
        assert all(r.result.status != "conflict" or r.result.code == "client_wins" for r in results)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    attrs=st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, max_size=5),
    deleted=st.booleans(),
    owner=st.sampled_from([BOBS, Ownership("t1", "team", "sales"), Ownership(None, None, None)]),
    source=st.sampled_from([{"device_id": "d1", "batch_id": "b1"}, {"api": "alice"}]),
    committed_at=st.floats(0, 4e9),
)
def test_record_event_payload_is_what_the_event_model_dumps(
    attrs: dict, deleted: bool, owner: Ownership, source: dict, committed_at: float
) -> None:
    """The applier writes RecordChanged payloads without building the model: the dict must be
    exactly what RecordChanged(...).model_dump(mode="json") gives, so the wire bytes match."""
    from conflict_service.batch_decisions import RecordEvent
    from offsync_shared.events.records import RecordChanged

    event = RecordEvent(StoredRecord("account", "a1", RecordState(7, deleted, attrs), owner), source)
    payload = event.payload(committed_at)
    assert RecordChanged.model_validate(payload).model_dump(mode="json") == payload
    assert list(RecordChanged.model_validate(payload).model_dump(mode="json")) == list(payload)
