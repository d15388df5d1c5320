"""Test helpers: a migrated database (admin + data schemas) seeded with a small organization by
SQL, and builders for device batches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from offsync_shared import db
from offsync_shared.events.device_batches import BatchUploaded, Change

ADMIN = "admin-user"
ALICE = "alice"  # sales, user-depth role on contact/account
BOB = "bob"  # sales, same role
CAROL = "carol"  # east (below sales), business_unit depth
DAVE = "dave"  # disabled
TEAM = "team-sales"

ACCOUNT_ATTRS = {
    "name": {"type": "string", "required": True},
    "city": {"type": "string"},
    "revenue": {"type": "decimal"},
}
CONTACT_ATTRS = {
    "lastname": {"type": "string", "required": True},
    "phone": {"type": "string"},
    "email": {"type": "string"},
    "age": {"type": "int"},
    "account": {"type": "lookup", "target": "account"},
}


@dataclass
class Org:
    pool: asyncpg.Pool

    async def set_policy(self, conflict_detection: bool, contact_override: str | None = None) -> None:
        await self.pool.execute("UPDATE admin.org_settings SET conflict_detection = $1", conflict_detection)
        await self.pool.execute(
            "UPDATE admin.entities SET conflict_policy = $1 WHERE logical_name = 'contact'", contact_override
        )

    async def record(self, entity: str, rid: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM data.records WHERE entity = $1 AND id = $2", entity, rid)

    async def outbox(self, topic_suffix: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT key, value FROM data.outbox WHERE topic LIKE $1 ORDER BY id", f"%{topic_suffix}"
        )
        return [orjson.loads(bytes(r["value"])) for r in rows]

    async def record_changes(self) -> list[dict[str, Any]]:
        """The record changes (RecordChanged payloads) of the records events in the outbox, in order."""
        return record_changes(await self.outbox("records.v1"))


async def lock_waits(pool: asyncpg.Pool) -> int:
    """Sessions of this database waiting for a lock (a race a test holds open)."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return n


async def migrated_pool(dsn: str, **kw: Any) -> asyncpg.Pool:
    pool = await db.create_pool(dsn, **kw)
    await db.migrate(pool, "admin", "profile_service.migrations")
    await db.migrate(pool, "data", "conflict_service.migrations")
    return pool


async def seed(pool: asyncpg.Pool, *, conflict_detection: bool = False) -> Org:
    user_role = {
        "account": {"create": "user", "read": "user", "write": "user", "delete": "user"},
        "contact": {"create": "user", "read": "user", "write": "user", "delete": "user"},
    }
    bu_role = {
        "*": {"create": "business_unit", "read": "business_unit", "write": "business_unit", "delete": "business_unit"}
    }
    async with pool.acquire() as c:
        await c.execute(
            """
            INSERT INTO admin.org_settings(org_id, conflict_detection) VALUES ('default', $1);
            INSERT INTO admin.business_units(id, name, parent_id) VALUES ('root', 'Root', NULL), ('sales', 'Sales', 'root'),
                   ('east', 'East', 'sales');
            """.replace("$1", "true" if conflict_detection else "false")
        )
        await c.executemany(
            "INSERT INTO admin.users(id, name, business_unit_id, enabled) VALUES ($1, $1, $2, $3)",
            [
                (ADMIN, "root", True),
                (ALICE, "sales", True),
                (BOB, "sales", True),
                (CAROL, "east", True),
                (DAVE, "sales", False),
            ],
        )
        await c.execute("INSERT INTO admin.teams(id, name, business_unit_id) VALUES ($1, 'Sales team', 'sales')", TEAM)
        await c.execute("INSERT INTO admin.team_members VALUES ($1, $2)", TEAM, ALICE)
        await c.executemany(
            "INSERT INTO admin.roles(id, name, is_admin, privileges) VALUES ($1, $1, $2, $3)",
            [
                ("sysadmin", True, {"*": {op: "organization" for op in ("create", "read", "write", "delete")}}),
                ("salesperson", False, user_role),
                ("manager", False, bu_role),
            ],
        )
        await c.executemany(
            "INSERT INTO admin.user_roles VALUES ($1, $2)",
            [(ADMIN, "sysadmin"), (ALICE, "salesperson"), (BOB, "salesperson"), (CAROL, "manager"), (DAVE, "sysadmin")],
        )
        await c.executemany(
            "INSERT INTO admin.entities(logical_name, display_name, ownership, attributes) VALUES ($1, $1, $2, $3)",
            [("account", "user_or_team", ACCOUNT_ATTRS), ("contact", "user_or_team", CONTACT_ATTRS)],
        )
    return Org(pool)


def change(seq: int, op: str, entity: str, rid: str, base: int | None = None, **fields: Any) -> Change:
    return Change(seq=seq, op=op, entity=entity, id=rid, base_version=base, fields=fields)


def batch(user: str, device: str, *changes: Change, batch_id: str | None = None) -> BatchUploaded:
    return BatchUploaded(
        batch_id=batch_id or str(uuid.uuid4()), device_id=device, user_id=user, changes=list(changes), received_at=0.0
    )


async def read_topic(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float = 20.0,
    distinct: bool = False,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """The first ``count`` envelopes on ``topic`` (all partitions, from the start, no group join).
    ``distinct``: ``count`` different envelopes, each once in first-seen order (the outbox
    delivers at least once, so one may come twice). ``until``: read on (past ``count``) until
    it holds for what was read."""
    from aiokafka import AIOKafkaConsumer

    from offsync_stack.testing import eventually

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got: list[dict[str, Any]] = []
    values: set[bytes] = set()
    try:

        async def enough() -> bool:
            for msgs in (await consumer.getmany(timeout_ms=100)).values():
                for m in msgs:
                    if not (distinct and m.value in values):
                        values.add(m.value)
                        got.append(orjson.loads(m.value))
            return len(got) >= count and (until is None or until(got))

        await eventually(enough, timeout=timeout, message=f"{count} messages on {topic}")
    finally:
        await consumer.stop()
    return got


def record_changes(envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The record changes (RecordChanged payloads) that records-topic envelopes carry, in order."""
    out: list[dict[str, Any]] = []
    for e in envelopes:
        out.extend(e["payload"]["records"] if e["type"] == "records.changed" else [e["payload"]])
    return out


async def read_record_changes(
    bootstrap: str, topic: str, count: int, timeout: float = 20.0, distinct: bool = False
) -> list[dict[str, Any]]:
    """At least ``count`` record changes from the records topic, flattened (``distinct``: each
    envelope once, as :func:`read_topic`)."""
    got = await read_topic(
        bootstrap, topic, 1, timeout=timeout, distinct=distinct, until=lambda got: len(record_changes(got)) >= count
    )
    return record_changes(got)
