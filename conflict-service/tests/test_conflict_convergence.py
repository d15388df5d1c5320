"""Property: random interleavings of server edits and offline edits from several devices, under
client-wins and server-wins, applied by the real applier on PostgreSQL. Every result matches a
naive reference model (so the policy's winner wins each conflict) and, after everyone syncs,
every device equals the server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import pytest_asyncio
from conflict_org import ADMIN, Org, batch, change, migrated_pool, seed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conflict_service.applier import Applier, BatchApplier, ChangeItem, Topics
from offsync_shared.events.device_batches import Change
from offsync_stack.testing import InfraEnv

pytestmark = pytest.mark.integration

TOPICS = Topics(records="p.records", batch_results="p.results")
RECORDS, DEVICES, FIELDS = 2, 3, ("name", "city")


@dataclass(frozen=True)
class Rec:
    version: int
    deleted: bool
    attrs: dict[str, Any]


@dataclass
class Device:
    local: dict[str, Rec] = field(default_factory=dict)
    pending: list[Change] = field(default_factory=list)


@pytest_asyncio.fixture
async def org(fresh_env: InfraEnv) -> AsyncIterator[Org]:
    pool = await migrated_pool(fresh_env.pg_dsn)
    try:
        yield await seed(pool)
    finally:
        await pool.close()


def model_apply(server: dict[str, Rec], changes: list[Change], client_wins: bool) -> list[tuple[str, int, Rec]]:
    """The reference: what each change of one batch must do (status, version, record after)."""
    out: list[tuple[str, int, Rec]] = []
    chain: dict[str, tuple[int | None, int]] = {}
    for ch in changes:
        s = server.get(ch.id)
        if ch.op == "create":
            assert s is None
            server[ch.id] = Rec(1, False, dict(ch.fields))
            chain[ch.id] = (ch.base_version, 1)
            out.append(("applied", 1, server[ch.id]))
            continue
        assert s is not None
        if ch.op == "delete" and s.deleted:
            out.append(("applied", s.version, s))
            continue
        base = chain[ch.id][1] if ch.id in chain and chain[ch.id][0] == ch.base_version else ch.base_version
        conflict = base is not None and base != s.version
        if conflict and not client_wins:
            out.append(("conflict", s.version, s))  # server wins: the device gets the server record
            continue
        new = Rec(s.version + 1, ch.op == "delete", s.attrs if ch.op == "delete" else {**s.attrs, **ch.fields})
        server[ch.id] = new
        chain[ch.id] = (ch.base_version, new.version)
        out.append(("conflict" if conflict else "applied", new.version, new))
    return out


ops = st.lists(
    st.one_of(
        st.tuples(st.just("server_edit"), st.integers(0, RECORDS - 1), st.sampled_from(FIELDS), st.integers(0, 9)),
        st.tuples(st.just("server_delete"), st.integers(0, RECORDS - 1)),
        st.tuples(
            st.just("device_edit"),
            st.integers(0, DEVICES - 1),
            st.integers(0, RECORDS - 1),
            st.sampled_from(FIELDS),
            st.integers(0, 9),
        ),
        st.tuples(st.just("device_delete"), st.integers(0, DEVICES - 1), st.integers(0, RECORDS - 1)),
        st.tuples(st.just("device_create"), st.integers(0, DEVICES - 1)),
        st.tuples(st.just("sync"), st.integers(0, DEVICES - 1)),
    ),
    max_size=24,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(steps=ops, client_wins=st.booleans())
async def test_interleavings_converge_and_the_policy_picks_the_winner(
    org: Org, steps: list[tuple[Any, ...]], client_wins: bool
) -> None:
    await org.set_policy(conflict_detection=not client_wins)
    prefix = uuid.uuid4().hex[:8]
    ids = [f"{prefix}-{i}" for i in range(RECORDS)]
    applier, batches = Applier(TOPICS), BatchApplier(org.pool, TOPICS)
    server: dict[str, Rec] = {}
    devices = [Device() for _ in range(DEVICES)]

    async def server_write(ch: Change) -> None:
        async with org.pool.acquire() as conn, conn.transaction():
            [res] = (await applier.apply_items(conn, [ChangeItem(ADMIN, ch)])).results
        expected = model_apply(server, [ch], client_wins)[0]
        assert (res.result.status, res.result.version) == expected[:2]

    async def download(dev: Device) -> None:
        rows = await org.pool.fetch(
            "SELECT id, version, deleted, attributes FROM data.records WHERE id LIKE $1", f"{prefix}-%"
        )
        dev.local = {r["id"]: Rec(r["version"], r["deleted"], r["attributes"]) for r in rows}

    async def sync(i: int) -> None:
        dev = devices[i]
        if dev.pending:
            [ans] = await batches.apply([batch(ADMIN, f"{prefix}-dev{i}", *dev.pending)])
            expected = model_apply(server, dev.pending, client_wins)
            for got, (status, version, rec) in zip(ans.results, expected, strict=True):
                assert (got.status, got.version) == (status, version), (got, status, version)
                if got.status == "conflict":
                    # The winner named by the policy: the record the device is told about.
                    assert got.record == {"version": rec.version, "deleted": rec.deleted, "attributes": rec.attrs}
            dev.pending = []
        await download(dev)

    for rid in ids:
        await server_write(change(0, "create", "account", rid, name="n0"))
    for i in range(DEVICES):
        await download(devices[i])

    for step in steps:
        kind = step[0]
        if kind == "server_edit":
            _, r, f, v = step
            if not server[ids[r]].deleted:
                await server_write(change(0, "update", "account", ids[r], None, **{f: f"s{v}"}))
        elif kind == "server_delete":
            if not server[ids[step[1]]].deleted:
                await server_write(change(0, "delete", "account", ids[step[1]], None))
        elif kind in ("device_edit", "device_delete"):
            dev, rid = devices[step[1]], ids[step[2]]
            local = dev.local.get(rid)
            if local is None or local.deleted:
                continue  # nothing to edit on this device
            seq = len(dev.pending)
            if kind == "device_edit":
                f, v = step[3], f"d{step[1]}.{step[4]}"
                dev.pending.append(change(seq, "update", "account", rid, local.version, **{f: v}))
                dev.local[rid] = replace(local, attrs={**local.attrs, f: v})
            else:
                dev.pending.append(change(seq, "delete", "account", rid, local.version))
                dev.local[rid] = replace(local, deleted=True)
        elif kind == "device_create":
            dev = devices[step[1]]
            rid = f"{prefix}-new-{uuid.uuid4().hex[:6]}"
            dev.pending.append(change(len(dev.pending), "create", "account", rid, name="created"))
            dev.local[rid] = Rec(0, False, {"name": "created"})
        else:
            await sync(step[1])

    for i in range(DEVICES):
        await sync(i)
    for i in range(DEVICES):
        await download(devices[i])
    final = {rid: (r.version, r.deleted, r.attrs) for rid, r in server.items()}
    for dev in devices:
        assert {rid: (r.version, r.deleted, r.attrs) for rid, r in dev.local.items()} == final
