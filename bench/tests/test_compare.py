"""--compare: stack names read into specs, and one markdown table with the stacks as columns."""

from __future__ import annotations

import pytest

from offsync_bench.compare import StackSpec, document, markdown, parse_stacks

PARSED = [
    ("tansu", [StackSpec("tansu", "embedded", 1, 1)]),
    ("embedded", [StackSpec("embedded", "embedded", 1, 1)]),
    (
        "tansu,kafka,kafka-2p",
        [StackSpec("tansu", "embedded"), StackSpec("kafka", "kafka"), StackSpec("kafka-2p", "kafka", 1, 2)],
    ),
    ("kafka3", [StackSpec("kafka3", "kafka", 3, 1)]),
    (" Kafka3-2p , tansu-2p ", [StackSpec("kafka3-2p", "kafka", 3, 2), StackSpec("tansu-2p", "embedded", 1, 2)]),
]


@pytest.mark.parametrize(("text", "specs"), PARSED, ids=[t for t, _ in PARSED])
def test_parse(text: str, specs: list[StackSpec]) -> None:
    assert parse_stacks(text) == specs


@pytest.mark.parametrize(
    "text",
    ["", "redpanda", "tansu3", "kafka-0p", "kafka9", "kafka,kafka", "kafka-2", "tansu,,kafka"],
    ids=[
        "empty",
        "unknown broker",
        "tansu with nodes",
        "zero processes",
        "too many nodes",
        "twice",
        "no p",
        "empty item",
    ],
)
def test_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stacks(text)


def test_env_selects_the_broker_and_clears_it_for_tansu() -> None:
    assert StackSpec("kafka3", "kafka", 3).env() == {"OFFSYNC_TEST_BROKER": "kafka", "OFFSYNC_TEST_KAFKA_BROKERS": "3"}
    assert StackSpec("tansu", "embedded").env() == {"OFFSYNC_TEST_BROKER": None, "OFFSYNC_TEST_KAFKA_BROKERS": None}
    assert StackSpec("tansu-2p", "embedded", 1, 2).describe() == {"broker": "embedded", "processes": 2}


def test_markdown_has_a_column_per_stack_and_says_what_failed() -> None:
    runs = {
        "tansu": {
            "stack": {"broker": "embedded", "processes": 1},
            "wall_seconds": 61.0,
            "workloads": {
                "live": {"status": "ok", "p50_ms": 21.5, "p99_ms": 40.0, "spread": {"p50_ms": [20, 23]}},
                "upload": {"status": "ok", "changes_per_s": 3552.4},
            },
        },
        "kafka-2p": {
            "stack": {"broker": "kafka", "kafka_brokers": 1, "processes": 2},
            "wall_seconds": 90.0,
            "workloads": {
                "live": {"status": "ok", "p50_ms": 30.25, "p99_ms": 55.0},
                "upload": {"status": "failed", "reason": "boom"},
            },
        },
    }
    text = markdown(document({"quick": True}, runs))
    lines = text.splitlines()
    assert lines[0] == "| workload | figure | tansu | kafka-2p |"
    assert "| live | p50_ms | 21.5 | 30.25 |" in lines
    assert "| upload | changes_per_s | 3,552 | – |" in lines
    assert "| upload | status | – | FAILED |" in lines
    assert "- upload on kafka-2p: boom" in lines
    assert not any("spread" in line for line in lines)
