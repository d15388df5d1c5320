"""The ops hint's payload (offsync_shared.ops_hint): what is sent, what is too large to send,
and what a listener accepts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsync_shared import ops_hint


@given(st.dictionaries(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=2**62), max_size=50))
def test_what_is_sent_is_what_a_listener_reads(advanced: dict[str, int]) -> None:
    payload = ops_hint.encode(advanced)
    if not advanced:
        assert payload is None
    elif payload is None:
        assert len(str(advanced).encode()) > ops_hint.MAX_PAYLOAD // 2  # only ever for large maps
    else:
        assert len(payload.encode()) <= ops_hint.MAX_PAYLOAD
        assert ops_hint.decode(payload) == advanced


def test_a_map_over_the_notify_limit_is_not_sent() -> None:
    large = {f"bucket-{i:06}": i for i in range(1_000)}
    assert ops_hint.encode(large) is None
    assert ops_hint.encode({"b": 1}) == '{"b":1}'


@pytest.mark.parametrize(
    "payload",
    ["", "not json", "[1, 2]", '{"b": "7"}', '{"b": 1.5}', '{"b": true}', '{"b": null}', "7"],
)
def test_anything_but_a_bucket_map_is_refused(payload: str) -> None:
    assert ops_hint.decode(payload) is None
