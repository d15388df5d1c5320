"""The benchmark org, loaded once per run and shared by the workloads that need it.

Fixture loading (business units, teams, users, role assignments, records) is set-wise COPY into
the tables: no user ever feels it. What users (admins) do goes through the real APIs: roles,
entity configuration, profiles and publish (admin API), record writes (records API).

Two populations:
- the main org (orgdata: ``sizes.users`` users, ~700k records at full size) in the main
  profile of workloads.md — the publish and incremental workloads;
- side users ``side-<i>`` in ``sizes.fanout_groups`` business units of their own, each owning
  ``sizes.upload_changes`` accounts, in a small "side" profile (their own accounts + their BU's
  territories): the device-fleet workloads (fanout, upload, connections, reconnect, live) use
  them, so a thousand devices do not each download a main-profile user's 10k+ records.
- one user ``bulk-0`` whose profile holds every generated account (initial_sync).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson

from offsync_bench.orgdata import Org, Sizes, make_org, records

ROOT_BU = "00000000-0000-0000-0000-000000000100"
MAIN_PROFILE = "bench-main"
SIDE_PROFILE = "bench-side"
BULK_PROFILE = "bench-bulk"
BULK_USER = "bulk-0"

MAIN_ITEMS: list[dict[str, Any]] = [
    {"entity": "account", "filter": {"kind": "other", "user": True, "team": False, "business_unit": True}},
    {
        "entity": "contact",
        "filter": {"kind": "related"},
        "relationships": [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}],
    },
    {"entity": "opportunity", "filter": {"kind": "other", "user": False, "team": True, "business_unit": False}},
    {
        "entity": "task",
        "filter": {
            "kind": "custom",
            "condition": {
                "and": [
                    {"attribute": "ownerid", "operator": "eq-userid"},
                    {"attribute": "prioritycode", "operator": "in", "value": [0, 1]},
                ]
            },
        },
    },
    {"entity": "product", "filter": {"kind": "all"}},
]
SIDE_ITEMS: list[dict[str, Any]] = [
    {"entity": "account", "filter": {"kind": "other", "user": True, "team": False, "business_unit": False}},
    {"entity": "territory", "filter": {"kind": "other", "user": False, "team": False, "business_unit": True}},
]
BULK_ITEMS: list[dict[str, Any]] = [
    {
        "entity": "account",
        "filter": {
            "kind": "custom",
            "condition": {"attribute": "accountnumber", "operator": "begins-with", "value": "AC"},
        },
    },
]
ROLES: list[dict[str, Any]] = [
    {
        "id": "bench-field",
        "name": "Bench field sales",
        "read_offline_profile": True,
        "privileges": {"*": {"create": "user", "read": "organization", "write": "organization", "delete": "user"}},
    },
    {
        "id": "bench-side",
        "name": "Bench side",
        "read_offline_profile": True,
        "privileges": {
            "account": {"create": "user", "read": "user", "write": "user", "delete": "user"},
            "territory": {"read": "organization"},
        },
    },
]
DESCRIPTION = {"type": "string", "required": False, "max_length": 2000}


def side_bu(k: int) -> str:
    return f"side-bu-{k}"


def side_user(i: int) -> str:
    return f"side-{i}"


def side_account(i: int, j: int) -> str:
    return f"side-{i}-acc-{j}"


def side_territory(k: int, j: int) -> str:
    return f"side-bu-{k}-terr-{j}"


def side_account_attributes(i: int, j: int, note: str = "") -> dict[str, Any]:
    return {"name": f"Side account {i}.{j}{note}", "accountnumber": f"UP{i:05d}{j:03d}"}


def side_territory_attributes(k: int, j: int, note: str = "") -> dict[str, Any]:
    return {"name": f"Territory {k}.{j}{note}", "description": "a territory of a side business unit"}


@dataclass
class Loaded:
    org: Org
    account_ids: list[str]  # generated accounts, in generation order
    account_rows: dict[str, tuple[str | None, str | None, dict[str, Any]]]  # id -> owner, owner type, attributes
    record_count: int
    load_seconds: float
    published: dict[str, int] = field(default_factory=dict)  # profile id -> published version

    def side_users_of_group(self, sizes: Sizes, k: int) -> list[int]:
        return [i for i in range(sizes.side_users) if i % sizes.fanout_groups == k]


def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 300:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path} -> {resp.status_code} {resp.text[:500]}")
    return resp.json() if resp.content else None


async def _connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    # Binary codecs: COPY (copy_records_to_table) is binary. jsonb's binary form is a version
    # byte (1) followed by the JSON text.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec("json", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog", format="binary")
    return conn


async def load(dsn: str, admin: httpx.AsyncClient, seed: int, sizes: Sizes) -> Loaded:
    """Configures the org through the admin API and COPYs the population; returns what the
    workloads need to address it."""
    t0 = time.perf_counter()
    for name in ("account", "contact", "opportunity", "task", "product", "territory"):
        body: dict[str, Any] = {"offline_enabled": True}
        if name in ("account", "contact"):
            body["attributes"] = {"description": DESCRIPTION}
        _ok(await admin.patch(f"/v1/entities/{name}", json=body))
    for role in ROLES:
        _ok(await admin.post("/v1/roles", json=role))
    role_bulk = {
        "id": "bench-bulk",
        "name": "Bench bulk",
        "read_offline_profile": True,
        "privileges": {"account": {"read": "organization"}},
    }
    _ok(await admin.post("/v1/roles", json=role_bulk))

    org = make_org(seed, sizes)
    account_ids, account_rows, n = await copy_population(dsn, org)
    return Loaded(org, account_ids, account_rows, n, time.perf_counter() - t0)


async def copy_population(
    dsn: str, org: Org, settle: bool = True
) -> tuple[list[str], dict[str, tuple[str | None, str | None, dict[str, Any]]], int]:
    """COPYs the org's business units, teams, users, role assignments and records (the roles and
    entities must exist); returns the generated account ids, their rows and the record count.

    ``settle``: leave the org as any org at rest is on a running server, before the first
    workload: its records vacuumed (autovacuum takes a freshly inserted table within a minute:
    hint bits, visibility map) and a checkpoint since the load (the server makes one every few
    minutes; it also leaves the load's WAL segments to be recycled). Unsettled, the first
    workload pays the load's aftermath instead: the first publish measured 6.50-6.72 s against
    6.07-6.16 s, most of it its WAL written into a fresh cluster's new segment files
    (docs/performance.md, "publish", round eight). ``settle=False``: the in-process publish
    script's ``--unsettled``, a publish right after a bulk load."""
    sizes = org.sizes
    gen_root = org.business_units[0]["id"]
    bu_id = lambda b: ROOT_BU if b == gen_root else b  # noqa: E731 — the generated root is the bootstrap root
    conn = await _connect(dsn)
    try:
        async with conn.transaction():
            bus = [
                (bu_id(b["id"]), b["name"], bu_id(b["parent_id"]) if b["parent_id"] else None)
                for b in org.business_units[1:]
            ]
            bus += [(side_bu(k), f"Side {k}", ROOT_BU) for k in range(sizes.fanout_groups)]
            await conn.copy_records_to_table(
                "business_units", schema_name="admin", records=bus, columns=["id", "name", "parent_id"]
            )
            await conn.copy_records_to_table(
                "teams",
                schema_name="admin",
                columns=["id", "name", "business_unit_id"],
                records=[(t["id"], t["name"], bu_id(t["business_unit_id"])) for t in org.teams],
            )
            users = [(u["id"], u["name"], bu_id(u["business_unit_id"]), None, u["language"]) for u in org.users]
            users += [
                (side_user(i), f"Side user {i}", side_bu(i % sizes.fanout_groups), None, 1033)
                for i in range(sizes.side_users)
            ]
            users.append((BULK_USER, "Bulk user", ROOT_BU, None, 1033))
            await conn.copy_records_to_table(
                "users",
                schema_name="admin",
                records=users,
                columns=["id", "name", "business_unit_id", "manager_id", "language"],
            )
            await conn.executemany(
                "UPDATE admin.users SET manager_id = $2 WHERE id = $1",
                [(u["id"], u["manager_id"]) for u in org.users if u["manager_id"]],
            )
            await conn.copy_records_to_table(
                "team_members",
                schema_name="admin",
                columns=["team_id", "user_id"],
                records=[(t["id"], m) for t in org.teams for m in t["member_ids"]],
            )
            roles = [(u["id"], "bench-field") for u in org.users]
            roles += [(side_user(i), "bench-side") for i in range(sizes.side_users)]
            roles.append((BULK_USER, "bench-bulk"))
            await conn.copy_records_to_table(
                "user_roles", schema_name="admin", records=roles, columns=["user_id", "role_id"]
            )

            account_ids: list[str] = []
            account_rows: dict[str, tuple[str | None, str | None, dict[str, Any]]] = {}
            rows: list[tuple[Any, ...]] = []
            n = 0
            cols = ["entity", "id", "version", "owner_id", "owner_type", "business_unit_id", "attributes"]
            for r in records(org):
                if r.entity == "account":
                    account_ids.append(r.id)
                    account_rows[r.id] = (r.owner_id, r.owner_type, r.attributes)
                rows.append(
                    (
                        r.entity,
                        r.id,
                        1,
                        r.owner_id,
                        r.owner_type,
                        bu_id(r.business_unit_id) if r.business_unit_id else None,
                        r.attributes,
                    )
                )
                if len(rows) >= 20_000:
                    await conn.copy_records_to_table("records", schema_name="data", records=rows, columns=cols)
                    n += len(rows)
                    rows = []
            for i in range(sizes.side_users):
                for j in range(sizes.upload_changes):
                    rows.append(
                        (
                            "account",
                            side_account(i, j),
                            1,
                            side_user(i),
                            "user",
                            side_bu(i % sizes.fanout_groups),
                            side_account_attributes(i, j),
                        )
                    )
            for k in range(sizes.fanout_groups):
                for j in range(sizes.side_territories):
                    rows.append(
                        ("territory", side_territory(k, j), 1, None, None, side_bu(k), side_territory_attributes(k, j))
                    )
            await conn.copy_records_to_table("records", schema_name="data", records=rows, columns=cols)
            n += len(rows)
        await conn.execute("VACUUM (ANALYZE) data.records" if settle else "ANALYZE data.records")
        await conn.execute("ANALYZE admin.users")
        if settle:
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return account_ids, account_rows, n


async def define_profile(admin: httpx.AsyncClient, pid: str, items: list[dict[str, Any]], user_ids: list[str]) -> None:
    _ok(await admin.post("/v1/profiles", json={"id": pid, "name": pid}))
    for item in items:
        _ok(await admin.post(f"/v1/profiles/{pid}/items", json=item))
    for k in range(0, len(user_ids), 1000):
        _ok(await admin.post(f"/v1/profiles/{pid}/users", json={"user_ids": user_ids[k : k + 1000]}))


async def publish(admin: httpx.AsyncClient, pid: str) -> int:
    """POST publish; returns the published version."""
    body = _ok(await admin.post(f"/v1/profiles/{pid}/publish", timeout=600))
    if isinstance(body, dict):
        for k in ("version", "published_version"):
            if isinstance(body.get(k), int):
                return int(body[k])
    prof = _ok(await admin.get(f"/v1/profiles/{pid}"))
    return int(prof["published_version"])


async def bucket_store_has_profile(conn: asyncpg.Connection, pid: str, version: int, users: int) -> bool:
    """publish-service reconciles a publish in one transaction: once every member has its
    user_profiles row at this version, the whole bucket set is committed."""
    n = await conn.fetchval(
        "SELECT count(*) FROM sync.user_profiles WHERE profile_id = $1 AND profile_version >= $2", pid, version
    )
    return int(n) >= users
