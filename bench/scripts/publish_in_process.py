"""Measures publish-service: set-wise publish of a generated org (default 2,000 users, 100k
records, the workloads.md profile) and incremental record commit -> op latency at a given rate.

    .venv/bin/python bench/scripts/publish_in_process.py --records 100000 --users 2000
    # make bench's own org (orgdata, seed 1) at full size, published 3 times (each on a fresh
    # copy of the loaded database), no incremental phase:
    .venv/bin/python bench/scripts/publish_in_process.py --org bench --repeat 3 --seconds 0
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import random
import statistics
import time

import asyncpg

from offsync_bench import fixture
from offsync_bench.cpuwait import postgres_cpu_s
from offsync_bench.fixture import MAIN_ITEMS
from offsync_bench.orgdata import Sizes, make_org
from offsync_shared import bus, db
from offsync_shared.events.records import RecordChanged
from offsync_shared.topics import RECORDS
from offsync_stack.infra import provide
from publish_service import first_copy, membership
from publish_service.worker import PublishWorker

# The workloads.md profile, the same one the bench fixture publishes.
PROFILE = MAIN_ITEMS


async def seed(conn, users: int, records: int) -> None:  # type: ignore[no-untyped-def]
    await conn.execute("INSERT INTO admin.business_units VALUES ('root', 'root', NULL)")
    await conn.execute(
        "INSERT INTO admin.business_units SELECT 'b' || i, 'b' || i, 'root' FROM generate_series(1, 4) i"
    )
    await conn.execute(
        "INSERT INTO admin.business_units SELECT 'b' || i || '_' || j, 'x', 'b' || i FROM generate_series(1, 4) i, generate_series(1, 4) j"
    )
    await conn.execute(
        "CREATE TEMP TABLE bu_list AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM admin.business_units"
    )
    await conn.execute(f"""INSERT INTO admin.users(id, name, business_unit_id, manager_id, language)
        SELECT 'u' || i, 'user ' || i, (SELECT id FROM bu_list WHERE n = i % 21), NULL, 1033 FROM generate_series(0, {users - 1}) i""")
    await conn.execute(
        "UPDATE admin.users SET manager_id = 'u' || (substr(id, 2)::int / 10) WHERE substr(id, 2)::int >= 10"
    )
    n_teams = max(1, users // 10)
    await conn.execute(
        f"INSERT INTO admin.teams SELECT 't' || i, 'team ' || i, (SELECT id FROM bu_list WHERE n = i % 21) FROM generate_series(0, {n_teams - 1}) i"
    )
    await conn.execute(f"""INSERT INTO admin.team_members SELECT DISTINCT 't' || t, 'u' || i FROM generate_series(0, {users - 1}) i,
        LATERAL (VALUES (i % {n_teams}), ((i * 7 + 3) % {n_teams})) v(t)""")
    await conn.execute("""INSERT INTO admin.roles(id, name, read_offline_profile, privileges)
        VALUES ('sales', 'Sales', true, '{"*": {"read": "organization"}}')""")
    await conn.execute("INSERT INTO admin.user_roles SELECT id, 'sales' FROM admin.users")
    await conn.execute("""INSERT INTO admin.entities(logical_name, display_name, ownership, offline_enabled) VALUES
        ('account', 'a', 'user_or_team', true), ('contact', 'c', 'user_or_team', true), ('opportunity', 'o', 'user_or_team', true),
        ('task', 't', 'user_or_team', true), ('product', 'p', 'organization', true)""")
    sizes = {
        "account": records // 7,
        "contact": 3 * records // 7,
        "opportunity": records // 7,
        "task": 2 * records // 7,
    }
    n_acc = sizes["account"]
    for entity, n in sizes.items():
        lookup = {"contact": "parentcustomerid", "opportunity": "parentaccountid", "task": "regardingobjectid"}.get(
            entity
        )
        lk = f"'{lookup}', 'account-' || (floor(random() * {n_acc}))::int," if lookup else ""
        # A record sits in its owner's BU (as in Dataverse and the bench fixture); user u<k> is in
        # BU k % 21 and team t<k> in BU k % 21.
        await conn.execute(f"""
            INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes)
            SELECT '{entity}', '{entity}-' || i, 1, CASE WHEN i % 5 = 0 THEN 't' ELSE 'u' END || k,
                   CASE WHEN i % 5 = 0 THEN 'team' ELSE 'user' END,
                   (SELECT id FROM bu_list WHERE n = k % 21),
                   jsonb_build_object('name', '{entity} ' || i, {lk} 'statecode', i % 2, 'prioritycode', i % 3,
                                      'description', repeat(md5(i::text), 10), 'revenue', (random() * 100000)::int)
            FROM generate_series(0, {n - 1}) i,
                 LATERAL (SELECT CASE WHEN i % 5 = 0 THEN i % {n_teams} ELSE floor({users} * random() ^ 2)::int END AS k) o""")
    await conn.execute("""INSERT INTO data.records(entity, id, version, attributes)
        SELECT 'product', 'product-' || i, 1, jsonb_build_object('name', 'product ' || i, 'price', i) FROM generate_series(0, 499) i""")
    await conn.execute("ANALYZE data.records")


async def seed_bench(dsn: str, conn, scale: float, seed: int, settle: bool = True) -> None:  # type: ignore[no-untyped-def]
    """make bench's org (orgdata + fixture.copy_population), with the roles and entity settings
    the bench sets through the admin API written directly."""
    await conn.execute(
        "INSERT INTO admin.business_units(id, name, parent_id) VALUES ($1, 'Root', NULL) ON CONFLICT DO NOTHING",
        fixture.ROOT_BU,
    )
    await conn.execute("""INSERT INTO admin.entities(logical_name, display_name, ownership, offline_enabled) VALUES
        ('account', 'a', 'user_or_team', true), ('contact', 'c', 'user_or_team', true),
        ('opportunity', 'o', 'user_or_team', true), ('task', 't', 'user_or_team', true),
        ('product', 'p', 'organization', true), ('territory', 'r', 'business', true)
        ON CONFLICT (logical_name) DO UPDATE SET offline_enabled = true, ownership = EXCLUDED.ownership""")
    for role in fixture.ROLES:
        await conn.execute(
            "INSERT INTO admin.roles(id, name, read_offline_profile, privileges) VALUES ($1, $2, $3, $4)",
            role["id"],
            role["name"],
            role["read_offline_profile"],
            role["privileges"],
        )
    await conn.execute(
        """INSERT INTO admin.roles(id, name, read_offline_profile, privileges)
           VALUES ('bench-bulk', 'Bench bulk', true, '{"account": {"read": "organization"}}')"""
    )
    sizes = Sizes() if scale == 1 else Sizes().scaled(scale)
    await fixture.copy_population(dsn, make_org(seed, sizes), settle)


async def publish_once(pool, conn, users: list[str]):  # type: ignore[no-untyped-def]
    from offsync_shared.events.admin import ProfileItemSnapshot, ProfilePublished

    ev = ProfilePublished(profile_id="P", version=1, items=[ProfileItemSnapshot(**i) for i in PROFILE], user_ids=users)
    t = time.perf_counter()
    # The publish's link indexes, built by the first copy as the worker has it build them (code
    # from before that had no such argument, for A/B runs against it).
    entities = [i["entity"] for i in PROFILE]
    if hasattr(membership, "link_indexes_of"):
        await first_copy.premirror(pool, entities, indexes=membership.link_indexes_of(ev))
    else:
        await first_copy.premirror(pool, entities)
    mirrored_s = time.perf_counter() - t
    async with conn.transaction():
        await membership.apply_profile_event(conn, ev)
        # The code before this round's helper connections took no pool (for A/B runs against it).
        helpers = (pool,) if "pool" in inspect.signature(membership.reconcile).parameters else ()
        res = await membership.reconcile(conn, "bench.notify", *helpers)
    return time.perf_counter() - t, mirrored_s, res


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=10, help="incremental phase; 0: none")
    ap.add_argument("--org", choices=("simple", "bench"), default="simple", help="bench: make bench's own org")
    ap.add_argument("--scale", type=float, default=1.0, help="--org bench: fraction of the full size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-wal-size", help="ALTER SYSTEM SET max_wal_size (e.g. 4GB) before seeding")
    ap.add_argument("--no-checkpoint", action="store_true", help="no CHECKPOINT right before the publish")
    ap.add_argument(
        "--unsettled",
        action="store_true",
        help="--org bench: no VACUUM and CHECKPOINT after the load (make bench settles)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="publishes, each on a fresh copy of the seeded database")
    args = ap.parse_args()
    with provide() as infra:
        dsn = await infra.create_database("bench")
        pool = await db.create_pool(dsn, max_size=4)
        for schema, pkg in (
            ("admin", "profile_service.migrations"),
            ("data", "conflict_service.migrations"),
            ("sync", "publish_service.migrations"),
        ):
            await db.migrate(pool, schema, pkg)
        async with pool.acquire() as conn:
            if args.max_wal_size:
                await conn.execute(f"ALTER SYSTEM SET max_wal_size = '{args.max_wal_size}'")
                await conn.execute("SELECT pg_reload_conf()")
            t = time.perf_counter()
            if args.org == "bench":
                await seed_bench(dsn, conn, args.scale, args.seed, not args.unsettled)
                users = [
                    r["id"]
                    for r in await conn.fetch(
                        "SELECT user_id AS id FROM admin.user_roles WHERE role_id = 'bench-field'"
                    )
                ]
            else:
                await seed(conn, args.users, args.records)
                users = [f"u{i}" for i in range(args.users)]
            n_records = await conn.fetchval("SELECT count(*) FROM data.records")
            seed_s = time.perf_counter() - t
        template = dsn.rsplit("/", 1)[1]
        await pool.close()
        runs = []
        for k in range(args.repeat):
            # Each publish on a fresh copy of the seeded database (the first on the original).
            run_dsn = dsn
            if k < args.repeat - 1:
                run_dsn = await infra.create_database("run", template=template)
            pool = await db.create_pool(run_dsn, max_size=4)
            async with pool.acquire() as conn:
                if not args.no_checkpoint:
                    await conn.execute("CHECKPOINT")
                wal0 = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
                ckpt0 = await conn.fetchval("SELECT num_timed + num_requested FROM pg_stat_checkpointer")
                load0, pg0 = os.getloadavg()[0], postgres_cpu_s()
                publish_s, mirror_s, res = await publish_once(pool, conn, users)
                pg_cpu, load1 = postgres_cpu_s() - pg0, os.getloadavg()[0]
                wal_mb = await conn.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn) / 1e6", wal0
                )
                ckpts = await conn.fetchval("SELECT num_timed + num_requested FROM pg_stat_checkpointer") - ckpt0
                buckets = await conn.fetchval("SELECT count(*) FROM sync.buckets")
                by_family = {
                    r["f"]: r["n"]
                    for r in await conn.fetch(
                        "SELECT split_part(bucket_id, ':', 1) || ':' || split_part(bucket_id, ':', 2) AS f, count(*) AS n "
                        "FROM sync.bucket_ops GROUP BY 1 ORDER BY 1"
                    )
                }
            if k < args.repeat - 1:
                # Dropped at once: autovacuum of its fresh tables would run into the next publish.
                await pool.close()
                server = await asyncpg.connect(infra.pg_server_dsn)
                await server.execute(f'DROP DATABASE "{run_dsn.rsplit("/", 1)[1]}"')
                await server.close()
            runs.append(publish_s)
            out = {
                "records": n_records,
                "users": len(users),
                "seed_s": round(seed_s, 2),
                "publish_s": round(publish_s, 2),
                "premirror_s": round(mirror_s, 2),
                "postgres_cpu_s": round(pg_cpu, 2),
                "loadavg_1m": [round(load0, 1), round(load1, 1)],
                "wal_mb": round(float(wal_mb)),
                "checkpoints": ckpts,
                "ops_written": res.ops_written,
                "buckets": buckets,
                "records_per_s": round(n_records / publish_s),
                "ops_per_s": round(res.ops_written / publish_s),
                "phases_s": res.timings,
                "ops_by_family": by_family,
            }
            print(json.dumps(out), flush=True)
        if args.repeat > 1:
            print(
                json.dumps({"publish_s_runs": [round(x, 2) for x in runs], "median": round(statistics.median(runs), 2)})
            )
        if args.seconds <= 0 or args.org == "bench":  # the incremental phase addresses the simple org's ids
            await pool.close()
            return

        # Incremental: rate changes/s of account/task updates, commit -> ops committed.
        prefix = f"bench{random.randint(0, 10**6)}."
        await bus.ensure_topics(infra.kafka_bootstrap, prefix, 4)
        producer = bus.Producer(infra.kafka_bootstrap)
        await producer.start()
        worker = PublishWorker(pool, producer, infra.kafka_bootstrap, prefix)
        task = asyncio.create_task(worker.run())
        topic = RECORDS.full(prefix)
        rnd = random.Random(1)
        sent = 0
        tick = 0.05
        per_tick = max(1, int(args.rate * tick))
        end = time.monotonic() + args.seconds + 8  # the first ~8 s cover the group join; not measured
        warm_until = time.monotonic() + 8
        measured_from = 0
        while time.monotonic() < end:
            t0 = time.monotonic()
            if t0 >= warm_until and not measured_from:
                measured_from = len(worker.latencies_ms)
            ids = [f"{rnd.choice(['account', 'task'])}-{rnd.randrange(args.records // 7)}" for _ in range(per_tick)]
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    """UPDATE data.records SET version = version + 1, owner_id = 'u' || floor(random() * $2)::int, owner_type = 'user',
                       attributes = attributes || jsonb_build_object('revenue', (random() * 1000)::int, 'statecode', (random() * 2)::int)
                       WHERE (entity, id) IN (SELECT split_part(x, '-', 1), x FROM unnest($1::text[]) x) RETURNING *""",
                    ids,
                    args.users,
                )
            now = time.time()
            msgs = []
            for r in rows:
                key = f"{r['entity']}:{r['id']}"
                ev2 = RecordChanged(
                    entity=r["entity"],
                    id=r["id"],
                    version=r["version"],
                    owner_id=r["owner_id"],
                    owner_type=r["owner_type"],
                    business_unit_id=r["business_unit_id"],
                    attributes=r["attributes"],
                    committed_at=now,
                )
                msgs.append((topic, key, ev2.envelope(key).encode()))
            await producer.send_many(msgs)
            sent += len(msgs)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - t0)))
        deadline = time.monotonic() + 30
        while worker.loop.processed < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        lat = sorted(list(worker.latencies_ms)[measured_from:])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await pool.close()
        if lat:
            q = statistics.quantiles(lat, n=100)
            print(
                json.dumps(
                    {
                        "incremental_events": len(lat),
                        "rate": args.rate,
                        "p50_ms": round(q[49], 1),
                        "p99_ms": round(q[98], 1),
                        "max_ms": round(lat[-1], 1),
                        "batches": len(worker.batch_ms),
                        "batch_p50_ms": round(statistics.median(worker.batch_ms), 1),
                        "batch_max_ms": round(max(worker.batch_ms), 1),
                        "processed": worker.loop.processed,
                        "sent": sent,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
