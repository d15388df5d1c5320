"""How a first copy deals entities over connections (first_copy.deal) and names their partitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publish_service.first_copy import deal, partition_name


@pytest.mark.parametrize(
    ("sizes", "parts", "groups"),
    [
        ({}, 2, []),
        ({"account": 10}, 2, [["account"]]),
        (
            {"contact": 300, "account": 150, "task": 200, "opportunity": 100},
            2,
            [["contact", "opportunity"], ["task", "account"]],
        ),
        ({"contact": 300, "account": 150, "task": 200}, 1, [["contact", "task", "account"]]),
        ({"a": 0, "b": 0, "c": 0}, 2, [["a", "c"], ["b"]]),
    ],
    ids=["nothing", "one entity", "the bench's profile", "one connection", "sizes unknown"],
)
def test_deal(sizes: dict[str, int], parts: int, groups: list[list[str]]) -> None:
    assert deal(sizes, parts) == groups


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 10**6), max_size=12), st.integers(1, 4))
def test_deal_places_every_entity_once_and_balances(sizes: dict[str, int], parts: int) -> None:
    groups = deal(sizes, parts)
    assert sorted(e for g in groups for e in g) == sorted(sizes)
    assert len(groups) <= parts and all(groups)
    loads = [sum(sizes[e] for e in g) for g in groups]
    if loads:
        # Largest first to the lightest group: no group exceeds the average by more than one entity.
        assert max(loads) <= sum(loads) / len(groups) + max(sizes.values())


@pytest.mark.parametrize("entity", ["account", "new_Widget", "x" * 200, "a'b;--", "é"])
def test_partition_names_are_plain_identifiers(entity: str) -> None:
    name = partition_name(entity)
    assert len(name.encode()) <= 63 and name.replace("_", "").isalnum() and name.isascii() and name == name.lower()
    assert partition_name(entity) == name and partition_name(entity + "2") != name
