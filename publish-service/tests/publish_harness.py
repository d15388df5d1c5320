"""Integration harness: a fresh database with the admin/data/sync schemas, an in-process publish
worker on the real broker, helpers that write org rows/records with SQL and send the matching
events, and the comparison of the bucket store against the naive reference."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from offsync_shared import bus, db
from offsync_shared.checksum import op_hash
from offsync_shared.doorbell import Doorbell
from offsync_shared.events import Event
from offsync_shared.events.admin import ProfileItemSnapshot, ProfilePublished, TeamChanged, UserChanged
from offsync_shared.events.records import RecordChanged, RecordsChanged
from offsync_shared.topics import ADMIN, RECORDS
from offsync_stack.testing import InfraEnv, eventually
from publish_service import membership
from publish_service.rules import reference
from publish_service.rules.buckets import ProfileItem
from publish_service.rules.model import Record
from publish_service.worker import PublishWorker


@dataclass
class Harness:
    env: InfraEnv
    pool: asyncpg.Pool
    producer: bus.Producer
    worker: PublishWorker
    sent: int = 0
    log: list[tuple[str, str, Event]] = field(default_factory=list)

    async def send(self, topic: str, key: str, ev: Event, record: bool = True) -> None:
        await self.producer.send(topic, ev.envelope(key))
        self.sent += 1
        if record:
            self.log.append((topic, key, ev))

    async def caught_up(self, timeout: float = 30.0) -> None:
        async def done() -> bool:
            return self.worker.loop.processed >= self.sent

        await eventually(done, timeout=timeout, message=f"worker processed {self.sent} events")

    # ---- writes as the owning services would make them, plus their events
    async def put_record(
        self,
        entity: str,
        rid: str,
        *,
        owner: tuple[str, str] | None = None,
        bu: str | None = None,
        attrs: dict[str, Any] | None = None,
        deleted: bool = False,
        send: bool = True,
    ) -> RecordChanged:
        """Write the record as conflict-service would and, with ``send``, its RecordChanged."""
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes, deleted)
                   VALUES ($1, $2, 1, $3, $4, $5, $6, $7)
                   ON CONFLICT (entity, id) DO UPDATE SET version = data.records.version + 1, owner_id = $3, owner_type = $4,
                       business_unit_id = $5, attributes = $6, deleted = $7, modified_at = now()
                   RETURNING *""",
                entity,
                rid,
                owner[1] if owner else None,
                owner[0] if owner else None,
                bu,
                attrs or {},
                deleted,
            )
        ev = RecordChanged(
            entity=entity,
            id=rid,
            version=row["version"],
            deleted=deleted,
            owner_id=row["owner_id"],
            owner_type=row["owner_type"],
            business_unit_id=bu,
            attributes=attrs or {},
            committed_at=time.time(),
        )
        if send:
            await self.send(RECORDS.full(self.env.topic_prefix), f"{entity}:{rid}", ev)
        return ev

    async def send_changes(self, changes: list[RecordChanged]) -> None:
        """One RecordsChanged carrying ``changes``, as a transaction of conflict-service sends it."""
        first = changes[0]
        await self.send(
            RECORDS.full(self.env.topic_prefix), f"{first.entity}:{first.id}", RecordsChanged(records=changes)
        )

    async def publish(self, profile_id: str, version: int, items: list[dict[str, Any]], user_ids: list[str]) -> None:
        snap = [ProfileItemSnapshot(**i) for i in items]
        async with self.pool.acquire() as c:
            await c.execute(
                "INSERT INTO admin.profile_versions(profile_id, version, snapshot) VALUES ($1, $2, $3)",
                profile_id,
                version,
                {"items": items, "user_ids": user_ids},
            )
        await self.send(
            ADMIN.full(self.env.topic_prefix),
            "default",
            ProfilePublished(profile_id=profile_id, version=version, items=snap, user_ids=user_ids),
        )

    async def user_changed(self, user_id: str) -> None:
        async with self.pool.acquire() as c:
            u = await c.fetchrow("SELECT * FROM admin.users WHERE id = $1", user_id)
            teams = [
                r["team_id"]
                for r in await c.fetch("SELECT team_id FROM admin.team_members WHERE user_id = $1", user_id)
            ]
            roles = [
                r["role_id"] for r in await c.fetch("SELECT role_id FROM admin.user_roles WHERE user_id = $1", user_id)
            ]
        await self.send(
            ADMIN.full(self.env.topic_prefix),
            "default",
            UserChanged(
                id=user_id,
                business_unit_id=u["business_unit_id"],
                team_ids=teams,
                manager_id=u["manager_id"],
                language=u["language"],
                enabled=u["enabled"],
                role_ids=roles,
            ),
        )

    async def team_changed(self, team_id: str) -> None:
        async with self.pool.acquire() as c:
            t = await c.fetchrow("SELECT * FROM admin.teams WHERE id = $1", team_id)
            members = [
                r["user_id"]
                for r in await c.fetch("SELECT user_id FROM admin.team_members WHERE team_id = $1", team_id)
            ]
        await self.send(
            ADMIN.full(self.env.topic_prefix),
            "default",
            TeamChanged(id=team_id, business_unit_id=t["business_unit_id"], member_ids=members),
        )

    async def redeliver_all(self, reverse: bool = False) -> None:
        for topic, key, ev in reversed(self.log) if reverse else list(self.log):
            await self.send(topic, key, ev, record=False)

    # ---- observations
    async def user_sets(self) -> dict[str, set[tuple[str, str]]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch("""SELECT DISTINCT ub.user_id, o.entity, o.record_id FROM sync.user_buckets ub
                                    JOIN sync.bucket_ops o ON o.bucket_id = ub.bucket_id AND o.op = 'put'""")
        out: dict[str, set[tuple[str, str]]] = {}
        for r in rows:
            out.setdefault(r["user_id"], set()).add((r["entity"], r["record_id"]))
        return out

    async def reference_sets(self) -> dict[str, set[tuple[str, str]]]:
        async with self.pool.acquire() as c:
            org = await membership.load_org(c)
            profiles = {r["profile_id"]: r["items"] for r in await c.fetch("SELECT * FROM sync.published_profiles")}
            members = {r["user_id"]: r["profile_id"] for r in await c.fetch("SELECT * FROM sync.profile_members")}
            recs = [
                Record(
                    r["entity"],
                    r["id"],
                    r["version"],
                    r["owner_id"],
                    r["owner_type"],
                    r["business_unit_id"],
                    r["attributes"],
                    r["deleted"],
                    r["created_at"],
                    r["modified_at"],
                )
                for r in await c.fetch("SELECT * FROM data.records")
            ]
        out = {}
        for u, p in members.items():
            if u not in org.users:
                continue
            items = [ProfileItem(i["entity"], i["filter"], tuple(i.get("relationships") or ())) for i in profiles[p]]
            s = reference.user_set(org, items, u, recs)
            if s:
                out[u] = s
        return out

    async def check_store_invariants(self) -> None:
        """Puts carry the current record version, checksums/counts match the content, the index
        matches data.records for every record in a bucket."""
        async with self.pool.acquire() as c:
            bad = await c.fetch("""SELECT o.* FROM sync.bucket_ops o JOIN data.records d ON d.entity = o.entity AND d.id = o.record_id
                                   WHERE o.op = 'put' AND o.version <> d.version""")
            assert not bad, bad[:3]
            ops = await c.fetch("SELECT bucket_id, entity, record_id, version FROM sync.bucket_ops WHERE op = 'put'")
            sums: dict[str, list[int]] = {}
            for o in ops:
                s = sums.setdefault(o["bucket_id"], [0, 0])
                s[0] = (s[0] + op_hash(o["entity"], o["record_id"], o["version"])) % 2**32
                s[1] += 1
            for b in await c.fetch("SELECT id, checksum, record_count FROM sync.buckets"):
                assert [b["checksum"], b["record_count"]] == sums.get(b["id"], [0, 0]), b["id"]
            stale = await c.fetchval("""SELECT count(*) FROM sync.bucket_ops o JOIN sync.record_index i
                                        ON i.entity = o.entity AND i.record_id = o.record_id WHERE o.op = 'put' AND i.version <> o.version""")
            assert stale == 0

    async def max_op_id(self) -> int:
        async with self.pool.acquire() as c:
            return int(await c.fetchval("SELECT COALESCE(max(op_id), 0) FROM sync.bucket_ops"))

    async def assert_matches_reference(self) -> None:
        got, want = await self.user_sets(), await self.reference_sets()
        assert got == want
        await self.check_store_invariants()


async def create_schemas(pool: asyncpg.Pool) -> None:
    await db.migrate(pool, "admin", "profile_service.migrations")
    await db.migrate(pool, "data", "conflict_service.migrations")
    await db.migrate(pool, "sync", "publish_service.migrations")


@asynccontextmanager
async def harness(env: InfraEnv, max_records: int = 500, bell: bool = False) -> AsyncIterator[Harness]:
    """``bell``: the worker gets a doorbell (as on the embedded stack), so it hears records hints."""
    await bus.ensure_topics(env.kafka_bootstrap, env.topic_prefix, 4)
    pool = await db.create_pool(env.pg_dsn, max_size=4)
    await create_schemas(pool)
    producer = bus.Producer(env.kafka_bootstrap)
    await producer.start()
    doorbell = Doorbell(env.pg_dsn, pool) if bell else None
    worker = PublishWorker(
        pool, producer, env.kafka_bootstrap, env.topic_prefix, max_records, bell=doorbell, **env.group_timeouts
    )
    tasks = [asyncio.create_task(worker.run())]
    if doorbell is not None:
        tasks.append(asyncio.create_task(doorbell.run()))
    try:
        yield Harness(env, pool, producer, worker)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await pool.close()


async def accounts_and_contacts(pool: asyncpg.Pool) -> None:
    """Nine users in three BUs, 300 accounts and 600 contacts whose parentcustomerid names one."""
    await pool.execute("INSERT INTO admin.business_units(id, name, parent_id) VALUES ('root', 'root', NULL)")
    await pool.execute(
        "INSERT INTO admin.business_units(id, name, parent_id) SELECT 'b' || i, 'b', 'root' FROM generate_series(1, 3) i"
    )
    await pool.execute(
        """INSERT INTO admin.roles(id, name, read_offline_profile, privileges)
           VALUES ('field', 'field', true, '{"*": {"read": "organization"}}')"""
    )
    await pool.execute(
        "INSERT INTO admin.users(id, name, business_unit_id) SELECT 'u' || i, 'u', 'b' || (i % 3 + 1) FROM generate_series(0, 8) i"
    )
    await pool.execute("INSERT INTO admin.user_roles SELECT id, 'field' FROM admin.users")
    await pool.execute(
        """INSERT INTO admin.entities(logical_name, display_name, ownership) VALUES
           ('account', 'a', 'user_or_team'), ('contact', 'c', 'user_or_team')"""
    )
    await pool.execute(
        """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
           SELECT 'account', 'a' || i, 1, 'u' || (i % 9), 'user', 'b' || (i % 9 % 3 + 1), jsonb_build_object('n', i)
           FROM generate_series(0, 299) i"""
    )
    await pool.execute(
        """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
           SELECT 'contact', 'c' || i, 1, 'u' || (i % 9), 'user', 'b' || (i % 9 % 3 + 1),
                  jsonb_build_object('parentcustomerid', 'a' || (i * 7 % 300))
           FROM generate_series(0, 599) i"""
    )
