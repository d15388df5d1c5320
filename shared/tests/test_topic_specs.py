"""topics.yaml read, fitted to a cluster and compared with existing topics (pure, table-driven)."""

from __future__ import annotations

import pytest

from offsync_shared import topic_specs
from offsync_shared.topic_specs import Observed, TopicSpec, differences, fit, parse
from offsync_shared.topics import ALL_TOPICS

SPEC = TopicSpec(
    "t",
    partitions=8,
    replication_factor=3,
    min_insync_replicas=2,
    retention_ms=1000,
    cleanup_policy="delete",
    max_message_bytes=100,
)


def test_the_definition_covers_every_topic_and_nothing_else() -> None:
    specs = topic_specs.load()
    assert set(specs) == {t.name for t in ALL_TOPICS}
    for s in specs.values():
        assert s.replication_factor >= s.min_insync_replicas >= 1


def test_defaults_apply_and_topics_override_them() -> None:
    specs = parse(
        "defaults: {replication_factor: 3, min_insync_replicas: 2, retention_ms: 5, cleanup_policy: delete,"
        " max_message_bytes: 9}\ntopics:\n  a: {partitions: 2}\n  b: {partitions: 1, retention_ms: -1}\n"
    )
    assert specs["a"] == TopicSpec("a", 2, 3, 2, 5, "delete", 9)
    assert specs["b"].retention_ms == -1


def test_a_topic_missing_a_setting_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="topic a has no cleanup_policy"):
        parse(
            "defaults: {replication_factor: 1, min_insync_replicas: 1, retention_ms: 1, max_message_bytes: 1}\n"
            "topics: {a: {partitions: 1}}"
        )


@pytest.mark.parametrize(
    ("brokers", "partitions", "rf", "want_parts", "want_rf", "want_isr", "noted"),
    [
        (3, None, None, 8, 3, 2, False),
        (5, None, None, 8, 3, 2, False),
        (1, None, None, 8, 1, 1, True),  # a single broker: capped, and said so
        (2, None, None, 8, 2, 2, True),
        (3, 4, None, 4, 3, 2, False),  # tests ask for fewer partitions
        (3, None, 1, 8, 1, 1, False),  # an explicit override is not a note
    ],
    ids=["three-brokers", "five-brokers", "one-broker", "two-brokers", "partition-override", "rf-override"],
)
def test_fit(
    brokers: int, partitions: int | None, rf: int | None, want_parts: int, want_rf: int, want_isr: int, noted: bool
) -> None:
    f = fit(SPEC, "p.", brokers=brokers, partitions=partitions, replication_factor=rf)
    assert f.full_name == "p.t"
    assert (f.spec.partitions, f.spec.replication_factor, f.spec.min_insync_replicas) == (want_parts, want_rf, want_isr)
    assert bool(f.notes) is noted


@pytest.mark.parametrize(
    ("observed", "expected"),
    [
        (Observed(8, 3, SPEC.configs()), []),
        (Observed(8, 3, {}), []),  # a broker that describes no configs: only what it told is compared
        (Observed(4, 3, {}), ["partitions: 4 on the broker, 8 in topics.yaml"]),
        (Observed(8, 1, {}), ["replication factor: 1 on the broker, 3 in topics.yaml"]),
        (
            Observed(8, 3, {**SPEC.configs(), "cleanup.policy": "compact", "min.insync.replicas": "1"}),
            [
                "min.insync.replicas: 1 on the broker, 2 in topics.yaml",
                "cleanup.policy: compact on the broker, delete in topics.yaml",
            ],
        ),
    ],
    ids=["same", "configs-unknown", "partitions", "replication", "configs"],
)
def test_differences(observed: Observed, expected: list[str]) -> None:
    assert differences(SPEC, observed) == expected
