"""Reads what a sync session needs from Postgres: access facts (admin, sync), a user's buckets,
their checksums, pages of ops (sync), and stored batch answers (data). Read-only.

Pages of ops are built as JSON by Postgres and passed through untouched (orjson.Fragment): the
gateway never decodes and re-encodes record payloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import orjson

from sync_service.device_access import AccessFacts, Published
from sync_service.metadata import describe_entity

# Settings of the connections the store reads through. Every read walks an index for a few rows.
# A bucket filled after the last ANALYZE looks tiny to the planner, which then bitmap-scans and
# sorts the whole rest of the bucket for each ops page (O(bucket) per page, so O(bucket^2) per
# download) instead of walking (bucket_id, op_id) for one page: no bitmap scans here.
READ_SETTINGS = {"enable_bitmapscan": "off"}


@dataclass(frozen=True, slots=True)
class BucketState:
    checksum: int
    last_op_id: int


# Where a stream stands: (op_id, bucket, entity, record id) of the last op sent. Op ids alone
# are not unique across buckets/records, so pages resume after the full key.
OpKey = tuple[int, str, str, str]


@dataclass(frozen=True, slots=True)
class OpsPage:
    ops: Any  # orjson.Fragment of the JSON array of op rows
    count: int
    last: OpKey | None
    # The pages' buckets' states in the same snapshot as the ops: when the page is the last one,
    # they tell whether a checkpoint is consistent without another round trip.
    states: dict[str, BucketState] | None = None
    # Whether the user may receive ops right now (``_CLEARED``; False: the page must not be
    # sent, the session re-checks its access instead), and the user's identity generation then.
    cleared: bool = True
    generation: str | None = None

    def clears(self, generation: str | None) -> bool:
        """This page may be sent to a session holding a token of ``generation``."""
        return self.cleared and (generation is None or self.generation in (None, generation))


@dataclass(frozen=True, slots=True)
class StoredBatch:
    device_id: str
    user_id: str
    results: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Admission:
    """Everything a connecting device needs, read in one round trip."""

    facts: AccessFacts
    buckets: frozenset[str]
    newest_op_id: int
    sync_intervals: Mapping[str, int] = field(default_factory=dict)  # entity -> minutes, the user's profile
    # The states of the user's buckets in the same snapshot: the resume plan compares a
    # reconnecting device's checksums with them without another round trip (None: not read).
    states: Mapping[str, BucketState] | None = None


@dataclass(frozen=True, slots=True)
class LiveBatch:
    """New ops of a set of buckets for many idle sessions at once, with the buckets' states and
    the (user, bucket) memberships, all from one snapshot."""

    rows: list[tuple[int, str, str]]  # (op_id, bucket, the op row as JSON text), op-id order
    complete: bool  # False when the row limit was hit: sessions must catch up on their own
    states: dict[str, BucketState]
    members: set[tuple[str, str]]
    # user -> identity generation, for the users who may receive ops right now (``_CLEARED``);
    # None when the reader did not check (every user is taken as cleared).
    cleared: dict[str, str] | None = None

    def clears(self, user_id: str, generation: str | None) -> bool:
        """This read may be sent to a session of ``user_id`` holding a token of ``generation``."""
        if self.cleared is None:
            return True
        current = self.cleared.get(user_id)
        return current is not None and generation in (None, current)


class BucketStore(Protocol):
    async def live_batch(self, buckets: list[str], users: list[str], after: int, limit: int) -> LiveBatch: ...
    async def admit(self, user_id: str, session_id: str | None = None) -> Admission: ...
    async def app_profiles(self, app: str) -> frozenset[str] | None: ...
    async def access(self, user_id: str) -> AccessFacts: ...
    async def user_buckets(self, user_id: str) -> set[str]: ...
    async def bucket_states(self, user_id: str, buckets: list[str]) -> dict[str, BucketState]: ...
    async def newest_op_id(self) -> int: ...
    async def newest_ops(self, buckets: list[str]) -> dict[str, int]: ...
    async def count_ops(self, user_id: str, buckets: list[str], after: int) -> int: ...
    async def ops_page(self, user_id: str, buckets: list[str], after: OpKey | int, limit: int) -> OpsPage: ...
    async def stored_batch(self, batch_id: str) -> StoredBatch | None: ...
    async def entity_metadata(self, user_id: str) -> list[dict[str, Any]]: ...


# The entities of the user's published profile version, with their attributes as admin.entities
# holds them now (an attribute added after the publish is known to devices at once).
_ENTITY_METADATA = """
SELECT e.logical_name, e.display_name, e.attributes::text AS attributes
FROM sync.user_profiles up
JOIN admin.profile_versions v ON v.profile_id = up.profile_id AND v.version = up.profile_version
CROSS JOIN LATERAL jsonb_array_elements(v.snapshot->'items') AS item
JOIN admin.entities e ON e.logical_name = item->>'entity'
WHERE up.user_id = $1
ORDER BY e.logical_name
"""


# Some role of the user, or of a team of the user, grants read_offline_profile.
_OFFLINE = """(EXISTS (SELECT 1 FROM admin.user_roles ur JOIN admin.roles r ON r.id = ur.role_id
                WHERE ur.user_id = u.id AND r.read_offline_profile)
        OR EXISTS (SELECT 1 FROM admin.team_members tm
                   JOIN admin.team_roles tr ON tr.team_id = tm.team_id
                   JOIN admin.roles r ON r.id = tr.role_id
                   WHERE tm.user_id = u.id AND r.read_offline_profile))"""

_ACCESS = f"""
SELECT u.enabled, u.generation, {_OFFLINE} AS offline,
       p.profile_id, p.profile_version, pp.profile_id AS published_profile, pp.version AS published_version
FROM admin.users u LEFT JOIN sync.user_profiles p ON p.user_id = u.id
LEFT JOIN admin.published_profile_users pp ON pp.user_id = u.id
WHERE u.id = $1
"""

# The users (of ``users``) who may receive ops right now, with their identity generation: the
# admin schema's current state says so (enabled, offline privilege, in a published profile) and
# the bucket store has applied that profile's latest publish. Read with the ops, in the same
# snapshot: publish-service may write an op into a bucket before it applies an admin change that
# came first (another topic or partition), so the bucket membership alone can be stale
# (docs/security.md, revocation).
# The users array drives the join (unnested once): as `u.id = ANY(users)` on the users table, the
# planner re-applied the whole array at every probe of a nested loop, which made a shared read
# for 1,000 devices O(users^2) (~0.45 ms per user, ~0.3-0.5 s per read at full-size fanout).
_CLEARED = f"""
SELECT u.id, u.generation
FROM unnest({{users}}::text[]) AS q(id)
JOIN admin.users u ON u.id = q.id
JOIN sync.user_profiles sp ON sp.user_id = u.id
JOIN admin.published_profile_users pp
  ON pp.user_id = u.id AND pp.profile_id = sp.profile_id AND pp.version = sp.profile_version
WHERE u.enabled AND {_OFFLINE}
"""

# The join on user_buckets re-checks membership at read time, so a device never receives a
# record of a bucket its user lost, even before the UserBucketsChanged notification arrives.
# Each bucket is read through its (bucket_id, op_id) index with its own LIMIT, the few rows
# merged, and only the final page joined to record_index: a page costs O(buckets x page), never
# O(bucket size). A put of a deleted record is sent as a remove.
_PAGE = (
    """
WITH cleared AS ("""
    + _CLEARED.format(users="ARRAY[$1::text]")
    + """), mine AS (
    SELECT bucket_id FROM sync.user_buckets WHERE user_id = $1 AND bucket_id = ANY($2::text[])
), page AS (
    SELECT o.op_id, o.bucket_id, o.op, o.entity, o.record_id, o.version
    FROM mine CROSS JOIN LATERAL (
        SELECT * FROM sync.bucket_ops o
        WHERE o.bucket_id = mine.bucket_id AND o.op_id >= $3 AND {after}
        ORDER BY o.op_id, o.entity, o.record_id
        LIMIT $4
    ) o
    ORDER BY o.op_id, o.bucket_id, o.entity, o.record_id
    LIMIT $4
), last AS (
    SELECT op_id, bucket_id, entity, record_id FROM page
    ORDER BY op_id DESC, bucket_id DESC, entity DESC, record_id DESC LIMIT 1
)
SELECT coalesce(json_agg(json_build_array(
           p.op_id, p.bucket_id,
           CASE WHEN p.op = 'remove' OR coalesce(r.deleted, true) THEN 'remove' ELSE 'put' END,
           p.entity, p.record_id, p.version,
           CASE WHEN p.op = 'remove' OR coalesce(r.deleted, true) THEN NULL ELSE r.attributes END
       ) ORDER BY p.op_id, p.bucket_id, p.entity, p.record_id), '[]')::text AS ops,
       count(*) AS n,
       (SELECT json_build_array(op_id, bucket_id, entity, record_id)::text FROM last) AS last,
       (SELECT json_object_agg(b.id, json_build_array(b.checksum, b.last_op_id))::text
        FROM sync.buckets b JOIN mine ON mine.bucket_id = b.id) AS states,
       (SELECT c.generation FROM cleared c) AS cleared_generation
FROM page p LEFT JOIN sync.record_index r ON r.entity = p.entity AND r.record_id = p.record_id
"""
)
_PAGE_AFTER_OP = _PAGE.format(after="o.op_id > $3")
_PAGE_AFTER_KEY = _PAGE.format(after="(o.op_id, o.bucket_id, o.entity, o.record_id) > ($3, $5, $6, $7)")


_ADMIT = f"""
WITH facts AS ({_ACCESS})
SELECT f.*,
       (SELECT coalesce(array_agg(bucket_id), '{{}}') FROM sync.user_buckets WHERE user_id = $1) AS buckets,
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM sync.op_id_seq) AS newest,
       (SELECT jsonb_object_agg(i ->> 'entity', coalesce((i ->> 'sync_interval_minutes')::int, 5))::text
          FROM sync.published_profiles pp, jsonb_array_elements(pp.items) i
         WHERE pp.profile_id = f.profile_id) AS intervals,
       EXISTS (SELECT 1 FROM admin.refresh_tokens t WHERE t.family_id = $2 AND t.revoked_at IS NOT NULL) AS revoked,
       (SELECT json_object_agg(b.id, json_build_array(b.checksum, b.last_op_id))::text
          FROM sync.buckets b JOIN sync.user_buckets ub ON ub.bucket_id = b.id AND ub.user_id = $1) AS states
FROM (SELECT 1) one LEFT JOIN facts f ON true
"""


# ``_ADMIT`` for many devices at once, one row per request (``n``: its position in the arrays):
# a reconnect storm costs a few statements instead of one round trip per device.
_ADMIT_MANY = f"""
WITH req AS (
    SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(user_id, session_id, n)
)
SELECT req.n, f.*,
       (SELECT coalesce(array_agg(ub.bucket_id), '{{}}') FROM sync.user_buckets ub WHERE ub.user_id = req.user_id)
           AS buckets,
       (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM sync.op_id_seq) AS newest,
       (SELECT jsonb_object_agg(i ->> 'entity', coalesce((i ->> 'sync_interval_minutes')::int, 5))::text
          FROM sync.published_profiles pp, jsonb_array_elements(pp.items) i
         WHERE pp.profile_id = f.profile_id) AS intervals,
       EXISTS (SELECT 1 FROM admin.refresh_tokens t WHERE t.family_id = req.session_id AND t.revoked_at IS NOT NULL)
           AS revoked,
       (SELECT json_object_agg(b.id, json_build_array(b.checksum, b.last_op_id))::text
          FROM sync.buckets b JOIN sync.user_buckets ub ON ub.bucket_id = b.id AND ub.user_id = req.user_id) AS states
FROM req LEFT JOIN LATERAL ({_ACCESS.replace("$1", "req.user_id")} LIMIT 1) f ON true
"""
# Admissions read by one statement at most (a bigger storm takes several, back to back).
ADMIT_BATCH = 500


# One statement, hence one snapshot and one round trip: the new ops (as parallel arrays in op-id
# order), the buckets' states and the (user, bucket) memberships. Only buckets whose newest op is
# past the position are probed for ops: publish-service moves a bucket's last_op_id in the
# transaction that writes its ops, so the others have none to give. A shared read covers every
# bucket of every enrolled session, mostly buckets of each user's own that did not move (full-size
# fanout: 4 of 1,004 had new ops, and the 1,004 probes were a third of the read).
_LIVE_BATCH = (
    """
WITH states AS (
    SELECT id, checksum, last_op_id FROM sync.buckets WHERE id = ANY($1::text[])
), ops AS (
    SELECT o.op_id, o.bucket_id, json_build_array(
               o.op_id, o.bucket_id,
               CASE WHEN o.op = 'remove' OR coalesce(r.deleted, true) THEN 'remove' ELSE 'put' END,
               o.entity, o.record_id, o.version,
               CASE WHEN o.op = 'remove' OR coalesce(r.deleted, true) THEN NULL ELSE r.attributes END)::text AS j,
           row_number() OVER (ORDER BY o.op_id, o.bucket_id, o.entity, o.record_id) AS n
    FROM states b
    CROSS JOIN LATERAL (
        SELECT * FROM sync.bucket_ops o WHERE o.bucket_id = b.id AND o.op_id > $2 ORDER BY o.op_id LIMIT $3
    ) o
    LEFT JOIN sync.record_index r ON r.entity = o.entity AND r.record_id = o.record_id
    WHERE b.last_op_id > $2
), members AS (
    SELECT user_id, bucket_id FROM sync.user_buckets WHERE user_id = ANY($4::text[]) AND bucket_id = ANY($1::text[])
), cleared AS ("""
    + _CLEARED.format(users="$4")
    + """
)
SELECT (SELECT coalesce(array_agg(op_id ORDER BY n), '{}') FROM ops) AS op_ids,
       (SELECT coalesce(array_agg(bucket_id ORDER BY n), '{}') FROM ops) AS op_buckets,
       (SELECT coalesce(array_agg(j ORDER BY n), '{}') FROM ops) AS op_rows,
       (SELECT coalesce(array_agg(id), '{}') FROM states) AS state_ids,
       (SELECT coalesce(array_agg(checksum), '{}') FROM states) AS checksums,
       (SELECT coalesce(array_agg(last_op_id), '{}') FROM states) AS last_op_ids,
       (SELECT coalesce(array_agg(user_id), '{}') FROM members) AS member_users,
       (SELECT coalesce(array_agg(bucket_id), '{}') FROM members) AS member_buckets,
       (SELECT coalesce(array_agg(id), '{}') FROM cleared) AS cleared_users,
       (SELECT coalesce(array_agg(generation), '{}') FROM cleared) AS cleared_generations
"""
)


def _facts(row: asyncpg.Record, session_revoked: bool = False) -> AccessFacts:
    published = None
    if row["published_profile"] is not None:
        published = Published(row["published_profile"], int(row["published_version"]))
    return AccessFacts(
        True,
        bool(row["enabled"]),
        bool(row["offline"]),
        row["profile_id"],
        row["profile_version"],
        row["generation"],
        published,
        session_revoked,
    )


class PgBucketStore:
    """BucketStore over the sync/admin/data schemas of one Postgres database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # Admissions waiting for the next shared read (user, sign-in, the connecting device's
        # future), and the task reading them: requests that arrive while a read is in flight
        # join the next one, as live_fanout does for ops.
        self._admits: list[tuple[str, str | None, asyncio.Future[Admission]]] = []
        self._admitter: asyncio.Task[None] | None = None

    async def live_batch(self, buckets: list[str], users: list[str], after: int, limit: int) -> LiveBatch:
        # One statement: the states and memberships describe exactly the ops read.
        row = await self.pool.fetchrow(_LIVE_BATCH, buckets, after, limit, users)
        assert row is not None
        per_bucket: dict[str, int] = {}
        for b in row["op_buckets"]:
            per_bucket[b] = per_bucket.get(b, 0) + 1
        return LiveBatch(
            rows=list(zip(row["op_ids"], row["op_buckets"], row["op_rows"], strict=True)),
            complete=all(n < limit for n in per_bucket.values()),
            states={
                b: BucketState(int(c) % 2**32, int(last))
                for b, c, last in zip(row["state_ids"], row["checksums"], row["last_op_ids"], strict=True)
            },
            members=set(zip(row["member_users"], row["member_buckets"], strict=True)),
            cleared=dict(zip(row["cleared_users"], row["cleared_generations"], strict=True)),
        )

    async def admit(self, user_id: str, session_id: str | None = None) -> Admission:
        """``session_id``: the sign-in of the device's token, checked for revocation. Devices
        connecting together are admitted by one statement (``_ADMIT_MANY``); each gets the row
        of its own request."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Admission] = loop.create_future()
        self._admits.append((user_id, session_id, fut))
        if self._admitter is None or self._admitter.done():
            self._admitter = loop.create_task(self._admit_waiting(), name="admission-reads")
        return await fut

    async def admit_one(self, user_id: str, session_id: str | None = None) -> Admission:
        """One device's admission in a statement of its own (``_ADMIT``)."""
        row = await self.pool.fetchrow(_ADMIT, user_id, session_id)
        assert row is not None
        return _admission(row)

    async def _admit_waiting(self) -> None:
        while self._admits:
            batch, self._admits = self._admits[:ADMIT_BATCH], self._admits[ADMIT_BATCH:]
            live = [r for r in batch if not r[2].done()]  # done: the device left meanwhile
            if not live:
                continue
            try:
                rows = await self.pool.fetch(_ADMIT_MANY, [r[0] for r in live], [r[1] for r in live])
                by_n = {int(row["n"]): row for row in rows}
                out = [_admission(by_n[n]) for n in range(1, len(live) + 1)]
            except Exception as exc:  # noqa: BLE001 - each waiting device fails as its own read would
                for _, _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, _, fut), admission in zip(live, out, strict=True):
                if not fut.done():
                    fut.set_result(admission)

    async def app_profiles(self, app: str) -> frozenset[str] | None:
        """Profiles attached to the offline-enabled app module with id or name ``app`` (None: no
        such module, or not enabled for offline). Reads profile-service's admin schema."""
        row = await self.pool.fetchrow(
            """SELECT a.offline_enabled,
                      coalesce((SELECT array_agg(profile_id) FROM admin.app_module_profiles WHERE app_module_id = a.id),
                               '{}') AS profiles
                 FROM admin.app_modules a WHERE a.id = $1 OR a.name = $1 ORDER BY a.id = $1 DESC LIMIT 1""",
            app,
        )
        if row is None or not row["offline_enabled"]:
            return None
        return frozenset(row["profiles"])

    async def access(self, user_id: str) -> AccessFacts:
        row = await self.pool.fetchrow(_ACCESS, user_id)
        if row is None:
            return AccessFacts(False, False, False, None, None)
        return _facts(row)

    async def user_buckets(self, user_id: str) -> set[str]:
        rows = await self.pool.fetch("SELECT bucket_id FROM sync.user_buckets WHERE user_id = $1", user_id)
        return {r["bucket_id"] for r in rows}

    async def bucket_states(self, user_id: str, buckets: list[str]) -> dict[str, BucketState]:
        rows = await self.pool.fetch(
            "SELECT b.id, b.checksum, b.last_op_id FROM sync.buckets b "
            "JOIN sync.user_buckets ub ON ub.bucket_id = b.id AND ub.user_id = $1 WHERE b.id = ANY($2::text[])",
            user_id,
            buckets,
        )
        return {r["id"]: BucketState(int(r["checksum"]) % 2**32, int(r["last_op_id"])) for r in rows}

    async def newest_ops(self, buckets: list[str]) -> dict[str, int]:
        rows = await self.pool.fetch("SELECT id, last_op_id FROM sync.buckets WHERE id = ANY($1::text[])", buckets)
        return {r["id"]: int(r["last_op_id"]) for r in rows}

    async def newest_op_id(self) -> int:
        # The sequence survives compaction; a device cursor above it means the server lost data.
        return int(
            await self.pool.fetchval("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM sync.op_id_seq")
        )

    async def count_ops(self, user_id: str, buckets: list[str], after: int) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM sync.bucket_ops o JOIN sync.user_buckets ub "
                "ON ub.bucket_id = o.bucket_id AND ub.user_id = $1 "
                "WHERE o.bucket_id = ANY($2::text[]) AND o.op_id > $3",
                user_id,
                buckets,
                after,
            )
        )

    async def ops_page(self, user_id: str, buckets: list[str], after: OpKey | int, limit: int) -> OpsPage:
        """Ops after ``after`` (an op id: every op above it; a key: every op past that exact op)."""
        if isinstance(after, int):
            row = await self.pool.fetchrow(_PAGE_AFTER_OP, user_id, buckets, after, limit)
        else:
            op_id, b, e, r = after
            row = await self.pool.fetchrow(_PAGE_AFTER_KEY, user_id, buckets, op_id, limit, b, e, r)
        assert row is not None
        last = None
        if row["last"] is not None:
            lo = orjson.loads(row["last"])
            last = (int(lo[0]), lo[1], lo[2], lo[3])
        return OpsPage(
            orjson.Fragment(row["ops"]),
            int(row["n"]),
            last,
            _states(row["states"]) if row["states"] is not None else {},
            cleared=row["cleared_generation"] is not None,
            generation=row["cleared_generation"],
        )

    async def stored_batch(self, batch_id: str) -> StoredBatch | None:
        row = await self.pool.fetchrow(
            "SELECT device_id, user_id, results FROM data.batches WHERE batch_id = $1", batch_id
        )
        if row is None:
            return None
        results = row["results"]
        if isinstance(results, dict):  # tolerate {"results": [...]} as well as a bare list
            results = results.get("results", [])
        return StoredBatch(row["device_id"], row["user_id"], list(results))

    async def entity_metadata(self, user_id: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(_ENTITY_METADATA, user_id)
        return [describe_entity(r["logical_name"], r["display_name"], orjson.loads(r["attributes"])) for r in rows]


def _admission(row: asyncpg.Record) -> Admission:
    if row["enabled"] is None:
        facts = AccessFacts(False, False, False, None, None)
    else:
        facts = _facts(row, session_revoked=bool(row["revoked"]))
    intervals = orjson.loads(row["intervals"]) if row["intervals"] else {}
    states = _states(row["states"]) if row["states"] is not None else {}
    return Admission(facts, frozenset(row["buckets"]), int(row["newest"]), intervals, states)


def _states(text: str) -> dict[str, BucketState]:
    """Bucket states from ``json_object_agg(id, [checksum, last_op_id])``."""
    return {b: BucketState(int(v[0]) % 2**32, int(v[1])) for b, v in orjson.loads(text).items()}
