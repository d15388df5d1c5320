"""RecordsChanged envelopes (offsync_shared.events.records.envelopes): every record once, in
order, chunks bounded by count and bytes, and what a consumer decodes is what was given."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared.envelope import Envelope
from offsync_shared.events import decode
from offsync_shared.events.records import RecordChanged, RecordsChanged, changes_of, envelopes

AT = "2026-12-07T03:00:00+00:00"


def payload(i: int, size: int = 0) -> dict[str, Any]:
    return RecordChanged(
        entity="account", id=f"a{i}", version=i + 1, attributes={"name": "x" * size}, committed_at=1.5
    ).model_dump(mode="json")


def decoded(envs: list[Envelope]) -> list[RecordsChanged]:
    out = []
    for env in envs:
        e = decode(Envelope.decode(env.encode()))
        assert isinstance(e, RecordsChanged)
        out.append(e)
    return out


@pytest.mark.parametrize(
    ("n", "max_records", "sizes"),
    [
        (0, 500, []),
        (1, 500, [1]),
        (500, 500, [500]),
        (501, 500, [500, 1]),
        (7, 3, [3, 3, 1]),
    ],
)
def test_chunks_by_count(n: int, max_records: int, sizes: list[int]) -> None:
    envs = list(envelopes((payload(i) for i in range(n)), AT, max_records=max_records))
    assert [len(e.records) for e in decoded(envs)] == sizes


def test_chunks_by_bytes_and_a_large_record_travels_alone() -> None:
    one = len(orjson.dumps(payload(0, 100)))
    ps = [payload(0, 100), payload(1, 100), payload(2, 5000), payload(3, 100)]
    envs = list(envelopes(ps, AT, max_bytes=2 * one + 2))
    assert [[r.id for r in e.records] for e in decoded(envs)] == [["a0", "a1"], ["a2"], ["a3"]]


def test_the_envelope_is_keyed_by_its_first_record_and_dated() -> None:
    [env] = envelopes([payload(4), payload(2)], AT)
    raw = orjson.loads(env.encode())
    assert (raw["type"], raw["key"], raw["occurred_at"], raw["schema_version"]) == (
        "records.changed",
        "account:a4",
        AT,
        RecordsChanged.VERSION,
    )


@given(
    st.lists(st.integers(0, 300), max_size=40),
    st.integers(1, 8),
    st.integers(50, 2000),
)
def test_every_record_once_in_order_within_bounds(sizes: list[int], max_records: int, max_bytes: int) -> None:
    ps = [payload(i, s) for i, s in enumerate(sizes)]
    events = decoded(list(envelopes(ps, AT, max_records=max_records, max_bytes=max_bytes)))
    assert [r.model_dump(mode="json") for r in changes_of(events)] == ps
    for e in events:
        assert 1 <= len(e.records) <= max_records
        body = sum(len(orjson.dumps(r.model_dump(mode="json"))) + 1 for r in e.records)
        assert len(e.records) == 1 or body <= max_bytes


@pytest.mark.parametrize(("slack", "events"), [(0, 1), (-1, 2)], ids=["fits-exactly", "one-byte-over"])
def test_the_byte_bound_counts_each_records_comma(slack: int, events: int) -> None:
    ps = [payload(0), payload(1)]
    exact = sum(len(orjson.dumps(p)) + 1 for p in ps)
    assert len(list(envelopes(ps, AT, max_bytes=exact + slack))) == events


def test_changes_of_takes_both_event_types_in_order() -> None:
    single = RecordChanged.model_validate(payload(9))
    many = RecordsChanged(records=[RecordChanged.model_validate(payload(i)) for i in range(2)])
    assert [r.id for r in changes_of([many, single, many])] == ["a0", "a1", "a9", "a0", "a1"]
