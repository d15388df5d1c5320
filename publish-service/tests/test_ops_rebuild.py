"""New buckets filled into a rebuilt bucket_ops (publish_service.ops_rebuild): the same ops and
bucket rows as inserting them, the ops held before kept with their op ids, every index and the
key back under their names, statements prepared on the old table still answering, and a failure
leaving bucket_ops as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from publish_harness import accounts_and_contacts, create_schemas

from offsync_shared import db
from offsync_shared.checksum import op_hash
from offsync_shared.events.admin import ProfileItemSnapshot, ProfilePublished
from offsync_stack.infra import Infra
from publish_service import bucket_writes, first_copy, membership, ops_rebuild

pytestmark = pytest.mark.integration

ACCOUNTS = {"entity": "account", "filter": {"kind": "other", "user": True, "team": False, "business_unit": True}}
CONTACTS = {
    "entity": "contact",
    "filter": {"kind": "related"},
    "relationships": [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}],
}
USERS = [f"u{i}" for i in range(9)]


class Boom(Exception):
    pass


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(await infra.create_database("ops_rebuild"), max_size=4)
    try:
        await create_schemas(p)
        await accounts_and_contacts(p)
        yield p
    finally:
        await p.close()


def _choose(monkeypatch: pytest.MonkeyPatch, rebuild: bool) -> list[bool]:
    """Make the reconcile's fill rebuild or insert; the list records each choice's outcome."""
    chosen: list[bool] = []

    async def pays(conn: asyncpg.Connection, entities: object) -> bool:
        chosen.append(rebuild)
        return rebuild

    monkeypatch.setattr(ops_rebuild, "pays", pays)
    return chosen


async def _publish(pool: asyncpg.Pool, items: list[dict], version: int = 1, fail: bool = False) -> None:
    ev = ProfilePublished(
        profile_id="P", version=version, items=[ProfileItemSnapshot(**i) for i in items], user_ids=USERS
    )
    await first_copy.premirror(pool, [i["entity"] for i in items])
    async with pool.acquire() as conn, conn.transaction():
        await membership.apply_profile_event(conn, ev)
        await membership.reconcile(conn, "n", pool)
        if fail:
            raise Boom


async def _ops(pool: asyncpg.Pool) -> dict[tuple[str, str, str], tuple[str, int, int]]:
    rows = await pool.fetch("SELECT * FROM sync.bucket_ops")
    return {(r["bucket_id"], r["entity"], r["record_id"]): (r["op"], r["version"], r["op_id"]) for r in rows}


async def _check_buckets(pool: asyncpg.Pool) -> None:
    """Each bucket row holds its ops' checksum, count and newest op id."""
    for b in await pool.fetch("SELECT id, checksum, record_count, last_op_id FROM sync.buckets"):
        mine = await pool.fetch("SELECT * FROM sync.bucket_ops WHERE bucket_id = $1 AND op = 'put'", b["id"])
        assert b["record_count"] == len(mine)
        assert b["checksum"] == sum(op_hash(o["entity"], o["record_id"], o["version"]) for o in mine) % 2**32
        assert b["last_op_id"] == max((o["op_id"] for o in mine), default=0)


async def _accounts_inserted(pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Publish the accounts alone, inserting their ops; the ops held then."""
    _choose(monkeypatch, False)
    await _publish(pool, [ACCOUNTS])
    return await _ops(pool)


async def _constraints(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT conname, contype, pg_get_constraintdef(oid) AS d FROM pg_constraint "
        "WHERE conrelid = 'sync.bucket_ops'::regclass ORDER BY 1"
    )


async def _indexes(pool: asyncpg.Pool) -> set[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'sync' AND tablename = 'bucket_ops'"
    )
    return {(r["indexname"], r["indexdef"]) for r in rows}


async def test_a_rebuild_fills_what_inserting_fills(infra: Infra, monkeypatch: pytest.MonkeyPatch) -> None:
    filled = {}
    for rebuild in (False, True):
        chosen = _choose(monkeypatch, rebuild)
        p = await db.create_pool(await infra.create_database("ops_rebuild_same"), max_size=4)
        try:
            await create_schemas(p)
            await accounts_and_contacts(p)
            await _publish(p, [ACCOUNTS, CONTACTS])
            assert chosen == [rebuild]
            await _check_buckets(p)
            filled[rebuild] = (
                {k: v[:2] for k, v in (await _ops(p)).items()},  # op ids are allocated in another order
                await p.fetch("SELECT id, checksum, record_count FROM sync.buckets ORDER BY id"),
                await _indexes(p),
            )
            assert await p.fetchval("SELECT to_regclass($1)", ops_rebuild.NEXT) is None
        finally:
            await p.close()
    assert any(k[1] == "contact" for k in filled[True][0])  # a derived family, filled after its parents
    assert filled[True] == filled[False]


async def test_a_rebuild_keeps_the_ops_held_and_the_tables_shape(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _accounts_inserted(pool, monkeypatch)
    indexes = await _indexes(pool)
    checks = await _constraints(pool)
    reader = await pool.acquire()
    try:
        # As sync-service reads a bucket's ops, prepared on the old table.
        page = await reader.prepare(
            "SELECT * FROM sync.bucket_ops o WHERE o.bucket_id = $1 AND o.op_id > $2 ORDER BY o.op_id LIMIT $3"
        )
        assert await page.fetch("none", 0, 1) == []  # a prepare alone leaves its transaction open until a Sync
        chosen = _choose(monkeypatch, True)
        await _publish(pool, [ACCOUNTS, CONTACTS], version=2)
        assert chosen == [True]
        after = await _ops(pool)
        assert {k: v for k, v in after.items() if k in held} == held  # same op ids: nothing re-downloaded
        assert any(k[1] == "contact" for k in after)
        await _check_buckets(pool)
        parent = bucket_writes.parent_indexes(await bucket_writes.load_defs(reader))
        names = {n for n, _ in await _indexes(pool)}
        assert names == {n for n, _ in indexes} | set(parent)
        assert indexes <= await _indexes(pool)  # the same definitions under the same names
        assert checks == await _constraints(pool)
        contact_bucket = next(k[0] for k in after if k[1] == "contact")
        rows = await page.fetch(contact_bucket, 0, 1000)
        assert {r["record_id"] for r in rows} == {k[2] for k in after if k[0] == contact_bucket}
    finally:
        await pool.release(reader)


async def test_a_fill_that_fails_leaves_bucket_ops_as_it_was(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = await _accounts_inserted(pool, monkeypatch)
    fill = bucket_writes._fill_family

    async def failing(conn: asyncpg.Connection, fam: list, into: str = bucket_writes.OPS) -> list:
        if fam[0].derived:
            raise Boom
        return await fill(conn, fam, into)

    monkeypatch.setattr(bucket_writes, "_fill_family", failing)
    _choose(monkeypatch, True)
    with pytest.raises(Boom):
        await _publish(pool, [ACCOUNTS, CONTACTS], version=2)
    assert await pool.fetchval("SELECT to_regclass($1)", ops_rebuild.NEXT) is None
    assert await _ops(pool) == held


async def test_a_reconcile_that_fails_after_the_swap_leaves_the_next_table_to_the_next_rebuild(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _choose(monkeypatch, True)
    with pytest.raises(Boom):
        await _publish(pool, [ACCOUNTS, CONTACTS], fail=True)
    assert await _ops(pool) == {}
    assert await pool.fetchval("SELECT count(*) FROM sync.buckets") == 0
    assert await pool.fetchval(f"SELECT count(*) FROM {ops_rebuild.NEXT}") > 0  # committed by the helpers

    await _publish(pool, [ACCOUNTS, CONTACTS])
    assert await pool.fetchval("SELECT to_regclass($1)", ops_rebuild.NEXT) is None
    assert any(k[1] == "contact" for k in await _ops(pool))
    await _check_buckets(pool)
    assert await pool.fetchval("SELECT count(*) FROM sync.user_profiles") == len(USERS)


async def test_a_rebuild_pays_only_while_bucket_ops_is_small_beside_the_records(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await first_copy.premirror(pool, ["account", "contact"])
        assert not await ops_rebuild.pays(conn, ["account"])  # no statistics of the index: no estimate
        await conn.execute("ANALYZE sync.record_index")
        assert await ops_rebuild.pays(conn, ["account"])
        assert not await ops_rebuild.pays(conn, ["nothing"])
        await conn.execute(
            "INSERT INTO sync.bucket_ops SELECT 'b', 'account', 'r' || i, i, 'put', 1 FROM generate_series(1, 301) i"
        )
        assert not await ops_rebuild.pays(conn, ["account"])  # bucket_ops holds more than the 300 accounts
        assert await ops_rebuild.pays(conn, ["account", "contact"])
