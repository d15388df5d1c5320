"""The records hint's payload: every key back as sent, duplicates once, too large or malformed
never sent or never raised."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from offsync_shared import records_hint

keys = st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=60)


@given(keys)
def test_a_hint_names_its_records_once_in_order(ks: list[tuple[str, str]]) -> None:
    payload = records_hint.encode(ks)
    if not ks:
        assert payload is None
        return
    if payload is None:  # over the NOTIFY limit: not sent (the events still go)
        return
    assert len(payload.encode()) <= records_hint.MAX_PAYLOAD
    assert records_hint.decode(payload) == list(dict.fromkeys(ks))


def test_too_many_records_make_no_hint() -> None:
    assert records_hint.encode([("account", f"{i:036d}") for i in range(200)]) is None


def test_anything_else_decodes_to_nothing() -> None:
    for bad in ("", "{}", "[1]", '[["a"]]', '[["a", 1]]', "not json", '{"a": 1}'):
        assert records_hint.decode(bad) is None
