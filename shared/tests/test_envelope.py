"""The envelope codec: round-trips anything well-formed, refuses anything else with EnvelopeError."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared.envelope import Envelope, EnvelopeError
from offsync_shared.events import UnknownEvent, decode
from offsync_shared.events.admin import BusinessUnitChanged

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(
    type_=st.text(min_size=1, max_size=30),
    key=st.text(max_size=30),
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)
def test_round_trip(type_: str, key: str, payload: dict[str, object]) -> None:
    env = Envelope(type=type_, key=key, payload=payload)
    assert Envelope.decode(env.encode()) == env


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"not json",
        b"[1]",
        b'{"id": "x"}',
        orjson.dumps({"id": 1, "type": "t", "schema_version": 1, "occurred_at": "", "key": "k", "payload": {}}),
        orjson.dumps({"id": "i", "type": "t", "schema_version": "1", "occurred_at": "", "key": "k", "payload": {}}),
        orjson.dumps({"id": "i", "type": "t", "schema_version": 1, "occurred_at": "", "key": "k", "payload": []}),
    ],
    ids=["none", "empty", "text", "array", "missing-fields", "int-id", "str-version", "list-payload"],
)
def test_malformed_is_refused(raw: bytes | None) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.decode(raw)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_envelope_error(raw: bytes) -> None:
    try:
        Envelope.decode(raw)
    except EnvelopeError:
        pass


def test_decode_typed_event_and_refuse_unknown() -> None:
    env = BusinessUnitChanged(id="b1", parent_id=None).envelope("default")
    assert decode(Envelope.decode(env.encode())) == BusinessUnitChanged(id="b1", parent_id=None)
    with pytest.raises(UnknownEvent):
        decode(Envelope(type="nope", key="k", payload={}))
    with pytest.raises(UnknownEvent):
        decode(Envelope(type=BusinessUnitChanged.TYPE, key="k", payload={}, schema_version=99))
    with pytest.raises(EnvelopeError):
        decode(Envelope(type=BusinessUnitChanged.TYPE, key="k", payload={"id": "b1", "parent_id": ["not", "an", "id"]}))


def test_new_ids_are_random_version_4_uuids_in_canonical_text() -> None:
    import uuid

    from offsync_shared.envelope import new_id

    ids = [new_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, text)
    # every variant nibble (8, 9, a, b) shows up: the two random bits below the variant are kept
    assert {text[19] for text in ids} == set("89ab")
