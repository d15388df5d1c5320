"""split_by_device (pure): a poll's batches dealt into concurrent apply groups without ever
splitting a device or reordering its batches."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conflict_service.worker import split_by_device
from offsync_shared.events.device_batches import BatchUploaded


def poll(devices: list[str]) -> list[tuple[BatchUploaded, Any]]:  # Any: no envelope needed
    return [
        (BatchUploaded(batch_id=f"b{i}", device_id=d, user_id="u", changes=[], received_at=0.0), None)
        for i, d in enumerate(devices)
    ]


def test_table() -> None:
    cases = [
        (["a", "b", "a", "c"], 2, [["b0", "b2", "b3"], ["b1"]]),
        (["a", "a", "a"], 4, [["b0", "b1", "b2"]]),
        (["a", "b", "c", "d"], 1, [["b0", "b1", "b2", "b3"]]),
        ([], 2, []),
    ]
    for devices, parts, want in cases:
        got = [[e.batch_id for e, _ in g] for g in split_by_device(poll(devices), parts)]  # type: ignore[attr-defined]
        assert got == want, (devices, parts)


@given(st.lists(st.sampled_from("abcdefg"), max_size=40), st.integers(min_value=1, max_value=5))
def test_devices_stay_whole_and_in_order(devices: list[str], parts: int) -> None:
    groups = split_by_device(poll(devices), parts)
    assert len(groups) <= parts
    owner: dict[str, int] = {}
    for k, g in enumerate(groups):
        ids = [int(e.batch_id[1:]) for e, _ in g]  # type: ignore[attr-defined]
        assert ids == sorted(ids)  # poll order kept inside a group
        for e, _ in g:
            assert owner.setdefault(e.device_id, k) == k  # type: ignore[attr-defined]
    assert sorted(int(e.batch_id[1:]) for g in groups for e, _ in g) == list(range(len(devices)))  # type: ignore[attr-defined]
