"""A shared live read costs O(sessions), not O(sessions^2): its read-time access check
(``_CLEARED``) probes each user once. Written as ``u.id = ANY(users)`` on the users table, the
planner re-applied the whole array at every probe of a nested loop, and one read for the 1,000
devices of the fanout workload took ~0.3 s of PostgreSQL time. And it looks for ops only in the
buckets that moved past the position, not in every bucket of every enrolled session."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from sync_service import bucket_reads

pytestmark = pytest.mark.integration

USERS = 400


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


async def test_the_live_reads_access_check_probes_each_user_once(
    store_db: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    setup, reads = store_db
    users = [f"u{i:04d}" for i in range(USERS)]
    await setup.execute(
        """INSERT INTO admin.business_units(id, name) VALUES ('bu', 'BU');
           INSERT INTO admin.roles(id, name, read_offline_profile) VALUES ('r', 'R', true);
           INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
           SELECT 'b', 'account', 'a' || g, g, 'put', 1 FROM generate_series(1, 5) g;
           INSERT INTO sync.buckets(id, definition, checksum, record_count, last_op_id)
           VALUES ('b', '{}', 0, 5, 5)"""
    )
    await setup.execute(
        """WITH u AS (SELECT unnest($1::text[]) AS id)
           , a AS (INSERT INTO admin.users(id, name, business_unit_id) SELECT id, id, 'bu' FROM u RETURNING id)
           , b AS (INSERT INTO admin.user_roles(user_id, role_id) SELECT id, 'r' FROM a RETURNING 1)
           , c AS (INSERT INTO admin.published_profile_users(user_id, profile_id, version)
                   SELECT id, 'p', 1 FROM u RETURNING 1)
           , d AS (INSERT INTO sync.user_buckets(user_id, bucket_id) SELECT id, 'b' FROM u RETURNING 1)
           INSERT INTO sync.user_profiles(user_id, profile_id, profile_version) SELECT id, 'p', 1 FROM u""",
        users,
    )
    # No ANALYZE: as in the fanout run, the planner has no statistics for these small tables
    # and chose a nested loop over the users' primary key.
    batch = await bucket_reads.PgBucketStore(reads).live_batch(["b"], users, 0, 100)
    assert len(batch.rows) == 5 and batch.cleared is not None and set(batch.cleared) == set(users)
    plan = await reads.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + bucket_reads._LIVE_BATCH, ["b"], 0, 100, users)
    (doc,) = orjson.loads(plan) if isinstance(plan, str | bytes) else plan  # the pool may decode json
    looped = [
        n
        for n in _nodes(doc["Plan"])
        if n.get("Actual Loops", 1) > 1 and users[0] in (n.get("Index Cond", "") + n.get("Filter", ""))
    ]
    # No node run once per user applies the whole users array.
    assert not looped, [(n["Node Type"], n.get("Index Cond"), n["Actual Loops"]) for n in looped]


async def test_the_live_read_probes_only_the_buckets_that_moved_past_the_position(
    store_db: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    setup, reads = store_db
    still = [f"still-{i:03d}" for i in range(200)]
    await setup.execute(
        """INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
           SELECT b, 'account', b || '-old', 1 + ordinality, 'put', 1
           FROM unnest($1::text[]) WITH ORDINALITY AS t(b)""",
        still,
    )
    await setup.execute(
        """INSERT INTO sync.buckets(id, definition, checksum, record_count, last_op_id)
           SELECT b, '{}', 0, 1, 1 + ordinality FROM unnest($1::text[]) WITH ORDINALITY AS t(b)""",
        still,
    )
    await setup.execute(
        """INSERT INTO sync.bucket_ops(bucket_id, entity, record_id, op_id, op, version)
           VALUES ('moved', 'account', 'new', 1000, 'put', 1);
           INSERT INTO sync.buckets(id, definition, checksum, record_count, last_op_id)
           VALUES ('moved', '{}', 0, 1, 1000)"""
    )
    buckets = [*still, "moved"]
    batch = await bucket_reads.PgBucketStore(reads).live_batch(buckets, [], 500, 100)
    assert [r[:2] for r in batch.rows] == [(1000, "moved")]
    assert len(batch.states) == len(buckets)  # every bucket's checkpoint state is still read
    plan = await reads.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + bucket_reads._LIVE_BATCH, buckets, 500, 100, [])
    (doc,) = orjson.loads(plan) if isinstance(plan, str | bytes) else plan
    probes = [
        n
        for n in _nodes(doc["Plan"])
        if n.get("Relation Name") == "bucket_ops" or "bucket_ops" in n.get("Index Name", "")
    ]
    assert probes and max(n.get("Actual Loops", 1) for n in probes) == 1, [
        (n["Node Type"], n.get("Actual Loops")) for n in probes
    ]
