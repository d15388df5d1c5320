"""The conflict policy: a table of (server state, change, policy) → outcome and winning record,
and properties that hold for any input."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict_service import policy as policy_module
from conflict_service.policy import Outcome, Policy, ProposedChange, RecordState, decide, effective_policy

CW, SW, FM = Policy.CLIENT_WINS, Policy.SERVER_WINS, Policy.FIELD_MERGE

# Server record at version 3: "name" last written at v1, "city" at v3 (changed after base 2).
LIVE = RecordState(3, False, {"name": "a", "city": "x"}, {"name": 1, "city": 3}, created_by="u1")
DEAD = RecordState(4, True, {"name": "a", "city": "x"}, {"name": 1, "city": 3}, created_by="u1")


def upd(fields: dict, base: int | None, user: str = "u1") -> ProposedChange:
    return ProposedChange("update", fields, base, user)


def dele(base: int | None) -> ProposedChange:
    return ProposedChange("delete", {}, base, "u1")


def create(fields: dict, user: str = "u1") -> ProposedChange:
    return ProposedChange("create", fields, None, user)


# (id, server, change, policy, fallback, outcome, written, expected version, deleted, attributes, lost)
TABLE = [
    ("create-new", None, create({"name": "n"}), CW, CW, Outcome.APPLIED, True, 1, False, {"name": "n"}, ()),
    (
        "update-same-base",
        LIVE,
        upd({"name": "b"}, 3),
        SW,
        SW,
        Outcome.APPLIED,
        True,
        4,
        False,
        {"name": "b", "city": "x"},
        (),
    ),
    (
        "update-blind",
        LIVE,
        upd({"name": "b"}, None),
        SW,
        SW,
        Outcome.APPLIED,
        True,
        4,
        False,
        {"name": "b", "city": "x"},
        (),
    ),
    ("delete-same-base", LIVE, dele(3), SW, SW, Outcome.APPLIED, True, 4, True, {"name": "a", "city": "x"}, ()),
    (
        "update-update-client-wins",
        LIVE,
        upd({"city": "y"}, 2),
        CW,
        CW,
        Outcome.CLIENT_WINS,
        True,
        4,
        False,
        {"name": "a", "city": "y"},
        (),
    ),
    (
        "update-update-server-wins",
        LIVE,
        upd({"city": "y"}, 2),
        SW,
        SW,
        Outcome.SERVER_WINS,
        False,
        3,
        False,
        {"name": "a", "city": "x"},
        ("city",),
    ),
    (
        "delete-vs-update-client-wins",
        LIVE,
        dele(2),
        CW,
        CW,
        Outcome.CLIENT_WINS,
        True,
        4,
        True,
        {"name": "a", "city": "x"},
        (),
    ),
    (
        "delete-vs-update-server-wins",
        LIVE,
        dele(2),
        SW,
        SW,
        Outcome.SERVER_WINS,
        False,
        3,
        False,
        {"name": "a", "city": "x"},
        ("*",),
    ),
    (
        "update-of-deleted-client-wins",
        DEAD,
        upd({"city": "y"}, 3),
        CW,
        CW,
        Outcome.CLIENT_WINS,
        True,
        5,
        False,
        {"name": "a", "city": "y"},
        (),
    ),
    (
        "update-of-deleted-server-wins",
        DEAD,
        upd({"city": "y"}, 3),
        SW,
        SW,
        Outcome.SERVER_WINS,
        False,
        4,
        True,
        {"name": "a", "city": "x"},
        ("city",),
    ),
    (
        "update-of-deleted-field-merge",
        DEAD,
        upd({"city": "y"}, 3),
        FM,
        SW,
        Outcome.SERVER_WINS,
        False,
        4,
        True,
        {"name": "a", "city": "x"},
        ("city",),
    ),
    (
        "update-blind-of-deleted",
        DEAD,
        upd({"city": "y"}, None),
        CW,
        CW,
        Outcome.NOT_FOUND,
        False,
        None,
        None,
        None,
        ("city",),
    ),
    (
        "delete-of-deleted",
        DEAD,
        dele(1),
        SW,
        SW,
        Outcome.ALREADY_DELETED,
        False,
        4,
        True,
        {"name": "a", "city": "x"},
        (),
    ),
    ("update-missing", None, upd({"name": "b"}, 1), CW, CW, Outcome.NOT_FOUND, False, None, None, None, ("name",)),
    ("delete-missing", None, dele(1), CW, CW, Outcome.NOT_FOUND, False, None, None, None, ()),
    (
        "create-retry-same-user",
        LIVE,
        create({"name": "a"}),
        SW,
        SW,
        Outcome.DUPLICATE,
        False,
        3,
        False,
        {"name": "a", "city": "x"},
        (),
    ),
    (
        "create-existing-id-client-wins",
        LIVE,
        create({"name": "z"}, "u2"),
        CW,
        CW,
        Outcome.CLIENT_WINS,
        True,
        4,
        False,
        {"name": "z", "city": "x"},
        (),
    ),
    (
        "create-existing-id-server-wins",
        LIVE,
        create({"name": "z"}, "u2"),
        SW,
        SW,
        Outcome.SERVER_WINS,
        False,
        3,
        False,
        {"name": "a", "city": "x"},
        ("name",),
    ),
    (
        "create-over-tombstone-server-wins",
        DEAD,
        create({"name": "a"}),
        SW,
        SW,
        Outcome.SERVER_WINS,
        False,
        4,
        True,
        {"name": "a", "city": "x"},
        ("name",),
    ),
    (
        "merge-disjoint-fields",
        LIVE,
        upd({"name": "b"}, 2),
        FM,
        SW,
        Outcome.MERGED,
        True,
        4,
        False,
        {"name": "b", "city": "x"},
        (),
    ),
    (
        "merge-overlap-server-fallback",
        LIVE,
        upd({"name": "b", "city": "y"}, 2),
        FM,
        SW,
        Outcome.MERGED,
        True,
        4,
        False,
        {"name": "b", "city": "x"},
        ("city",),
    ),
    (
        "merge-overlap-only-server-fallback",
        LIVE,
        upd({"city": "y"}, 2),
        FM,
        SW,
        Outcome.SERVER_WINS,
        False,
        3,
        False,
        {"name": "a", "city": "x"},
        ("city",),
    ),
    (
        "merge-overlap-client-fallback",
        LIVE,
        upd({"city": "y"}, 2),
        FM,
        CW,
        Outcome.MERGED,
        True,
        4,
        False,
        {"name": "a", "city": "y"},
        (),
    ),
    (
        "merge-delete-uses-fallback",
        LIVE,
        dele(2),
        FM,
        SW,
        Outcome.SERVER_WINS,
        False,
        3,
        False,
        {"name": "a", "city": "x"},
        ("*",),
    ),
]


@pytest.mark.parametrize(
    "server,change,pol,fallback,outcome,written,version,deleted,attrs,lost",
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_decision_table(server, change, pol, fallback, outcome, written, version, deleted, attrs, lost) -> None:
    d = decide(server, change, pol, fallback)
    assert d.outcome is outcome
    assert d.written is written
    assert d.lost_fields == lost
    if version is None:
        assert d.result is None
    else:
        assert d.result is not None
        assert (d.result.version, d.result.deleted, dict(d.result.attributes)) == (version, deleted, attrs)


@pytest.mark.parametrize(
    "detection,override,expected",
    [
        (False, None, (CW, CW)),
        (True, None, (SW, SW)),
        (True, "client_wins", (CW, CW)),
        (False, "server_wins", (SW, SW)),
        (True, "field_merge", (FM, SW)),
        (False, "field_merge", (FM, CW)),
    ],
    ids=["off", "on", "override-client", "override-server", "merge-org-on", "merge-org-off"],
)
def test_effective_policy(detection: bool, override: str | None, expected: tuple[Policy, Policy]) -> None:
    assert effective_policy(detection, override) == expected


def test_merge_records_field_versions_of_applied_fields() -> None:
    d = decide(LIVE, upd({"name": "b"}, 2), FM, SW)
    assert d.result is not None and dict(d.result.field_versions) == {"name": 4, "city": 3}


names = st.sampled_from(["a", "b", "c", "d"])
values = st.integers(0, 3)
states = st.builds(
    lambda v, deleted, attrs, fv_seed: RecordState(
        v, deleted, attrs, {k: min(v, max(1, (fv_seed + i) % (v + 1))) for i, k in enumerate(sorted(attrs))}, "u1"
    ),
    st.integers(1, 6),
    st.booleans(),
    st.dictionaries(names, values, max_size=4),
    st.integers(0, 10),
)
changes = st.builds(
    ProposedChange,
    st.sampled_from(["create", "update", "delete"]),
    st.dictionaries(names, values, max_size=3),
    st.one_of(st.none(), st.integers(0, 7)),
    st.sampled_from(["u1", "u2"]),
)
policies = st.sampled_from(list(Policy))


@given(st.one_of(st.none(), states), changes, policies, st.sampled_from([CW, SW]))
def test_properties_of_every_decision(server, change, pol, fallback) -> None:
    d = decide(server, change, pol, fallback)
    if d.written:
        # A write is exactly one version above the server's and never loses server-only fields.
        assert d.result is not None
        assert d.result.version == (server.version if server else 0) + 1
        if server is not None:
            assert set(server.attributes) <= set(d.result.attributes)
    elif d.result is not None:
        assert d.result == server  # nothing written → the device gets the server record unchanged
    if server is not None and change.op != "create" and change.base_version in (None, server.version):
        assert not d.conflict  # no concurrent change → never a conflict
    if d.conflict and pol is Policy.CLIENT_WINS:
        assert d.outcome is Outcome.CLIENT_WINS and d.written
        assert d.result is not None
        if change.op == "delete":
            assert d.result.deleted
        else:
            assert not d.result.deleted and all(d.result.attributes[k] == v for k, v in change.fields.items())
    if d.conflict and pol is Policy.SERVER_WINS:
        assert d.outcome is Outcome.SERVER_WINS and d.result == server
    if d.outcome is Outcome.MERGED:
        assert d.result is not None and server is not None
        applied = {k for k in change.fields if k not in d.lost_fields}
        assert all(d.result.attributes[k] == change.fields[k] for k in applied)
        assert all(d.result.attributes.get(k) == server.attributes.get(k) for k in d.lost_fields)


def test_policy_module_is_pure() -> None:
    import offsync_shared.domain

    domain = Path(offsync_shared.domain.__file__).parent
    paths = [Path(policy_module.__file__).with_name(f"{m}.py") for m in ("policy", "validation", "batch_decisions")]
    for path in [*paths, *sorted(domain.glob("*.py"))]:
        tree = ast.parse(path.read_text())
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        assert not {m.split(".")[0] for m in imported} & {"asyncpg", "aiokafka", "faust", "fastapi", "websockets"}, path
