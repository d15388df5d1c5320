"""Topics come from topics.yaml: created with its settings (fitted to the cluster), and an
existing topic whose settings differ is left alone with a warning that says what differs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from offsync_shared import bus
from offsync_shared.topics import ADMIN, RECORDS
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_created_as_defined_and_a_differing_topic_is_warned_about(
    fresh_env: InfraEnv, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = fresh_env.topic_prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=fresh_env.kafka_bootstrap)
    await admin.start()
    try:
        # Someone made the records topic by hand, with other settings.
        await admin.create_topics([NewTopic(RECORDS.full(prefix), num_partitions=2, replication_factor=1)])
        with caplog.at_level(logging.WARNING, logger="offsync_shared.bus"):
            created = await bus.ensure_topics(fresh_env.kafka_bootstrap, prefix, 3, check_existing=True)
        assert RECORDS.name not in created and ADMIN.name in created
        warned = [r.getMessage() for r in caplog.records if RECORDS.full(prefix) in r.getMessage()]
        assert warned and "partitions: 2 on the broker, 3 in topics.yaml" in warned[0], warned

        async def admin_partitions() -> int:
            [meta] = await admin.describe_topics([ADMIN.full(prefix)])
            return len(meta["partitions"])

        # On three nodes the broker that answers may not have applied the new topic yet: it
        # answers with no partitions (CI, 2026-12-08), then with all of them.
        assert await eventually(admin_partitions, timeout=30, message="the admin topic described") == 3
    finally:
        await admin.close()


def test_nothing_hard_codes_a_replication_factor_of_one() -> None:
    hits = []
    for path in REPO.rglob("*.py"):
        if ".venv" in path.parts or path == Path(__file__):
            continue
        if re.search(r"replication_factor\s*=\s*1\b", path.read_text(errors="replace")):
            hits.append(str(path.relative_to(REPO)))
    assert not hits, f"replication factor 1 hard-coded in {hits}: topics.yaml and the cluster decide it"
