"""bench-results.json says which durability the measured PostgreSQL ran with, as the server
reports it (issue #20, item 0)."""

from __future__ import annotations

import pytest

from offsync_bench import results
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration


async def test_durability_is_read_from_the_server(fresh_env: InfraEnv) -> None:
    got = await results.durability(fresh_env.pg_dsn)
    assert set(got) == {*results.DURABILITY_SETTINGS, *results.COST_SETTINGS, "collation", "durable"}
    # the embedded server's settings that move the figures are recorded too
    assert (
        got["io_method"],
        got["wal_init_zero"],
        got["backend_flush_after"],
        got["wal_buffers"],
        got["wal_writer_delay"],
        got["collation"],
    ) == ("sync", "off", "256kB", "32MB", "10ms", "builtin C.UTF-8")
    # the test suite's disposable server trades durability for speed, and the record says so
    assert (got["fsync"], got["durable"]) == ("off", False)


def test_the_document_carries_the_database_settings() -> None:
    import orjson

    from offsync_bench.orgdata import Sizes

    doc = orjson.loads(results.document(1, Sizes().scaled(0.1), True, {}, {"fsync": "on", "durable": True}))
    assert doc["database"] == {"fsync": "on", "durable": True}
