"""The records REST API and the admin endpoints, in-process over a real PostgreSQL: auth,
authorization without leaks, If-Match, validation with the field named, bulk import, ledger
listing and re-apply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio
from conflict_org import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    Org,
    batch,
    change,
    lock_waits,
    migrated_pool,
    read_record_changes,
    read_topic,
    record_changes,
    seed,
)

from conflict_service.app import create_app
from conflict_service.applier import BatchApplier, topics_for
from conflict_service.settings import Settings
from offsync_shared import auth
from offsync_stack.testing import InfraEnv, eventually

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, client: httpx.AsyncClient, settings: Settings, org: Org) -> None:
        self.client, self.settings, self.org = client, settings, org

    def h(self, user: str, **extra: str) -> dict[str, str]:
        return {
            "Authorization": "Bearer " + auth.issue_token(self.settings.jwt_secret, user, auth.ADMIN_AUDIENCE),
            **extra,
        }


@pytest_asyncio.fixture
async def api(fresh_env: InfraEnv) -> AsyncIterator[Api]:
    pool = await migrated_pool(fresh_env.pg_dsn)
    org = await seed(pool)
    settings = Settings(**fresh_env.settings_kwargs(), conflict_consumer=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield Api(client, settings, org)
    await pool.close()


async def test_crud_with_if_match_and_events(api: Api) -> None:
    c = api.client
    r = await c.post("/v1/records/account", json={"id": "a1", "attributes": {"name": "Acme"}}, headers=api.h(ALICE))
    assert r.status_code == 201 and r.json()["version"] == 1 and r.headers["ETag"] == '"1"'
    assert (
        await c.post("/v1/records/account", json={"id": "a1", "attributes": {"name": "X"}}, headers=api.h(ALICE))
    ).status_code == 409
    r = await c.patch(
        "/v1/records/account/a1", json={"attributes": {"city": "Oslo"}}, headers=api.h(ALICE, **{"If-Match": '"1"'})
    )
    assert (
        r.status_code == 200 and r.json()["attributes"] == {"name": "Acme", "city": "Oslo"} and r.json()["version"] == 2
    )
    r = await c.patch(
        "/v1/records/account/a1", json={"attributes": {"city": "Bergen"}}, headers=api.h(ALICE, **{"If-Match": "1"})
    )
    assert r.status_code == 412 and r.json()["error"]["code"] == "precondition_failed"
    assert (await c.get("/v1/records/account/a1", headers=api.h(ALICE))).json()["version"] == 2
    assert (await c.delete("/v1/records/account/a1", headers=api.h(ALICE, **{"If-Match": "2"}))).status_code == 204
    assert (await c.get("/v1/records/account/a1", headers=api.h(ALICE))).status_code == 404
    # The outbox delivers at least once: under load a version can come twice (seen in a parallel make test).
    changes = await read_record_changes(
        api.settings.kafka_bootstrap, topics_for(api.settings.topic_prefix).records, 3, distinct=True
    )
    assert sorted((c["version"], c["deleted"], c["source"]["api"]) for c in changes) == [
        (1, False, ALICE),
        (2, False, ALICE),
        (3, True, ALICE),
    ]


async def test_a_create_that_loses_a_race_for_its_id_is_a_409_and_writes_nothing(api: Api) -> None:
    async with api.org.pool.acquire() as other, other.transaction():
        await other.execute(
            """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes, created_by)
               VALUES ('account', 'raced', 1, $1, 'user', 'sales', '{"name": "First"}', $1)""",
            ALICE,
        )
        post = asyncio.create_task(
            api.client.post(
                "/v1/records/account", json={"id": "raced", "attributes": {"name": "Second"}}, headers=api.h(ALICE)
            )
        )
        await eventually(lambda: lock_waits(api.org.pool), message="the create waiting for the other's row")
    r = await post
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
    r = await api.client.get("/v1/records/account/raced", headers=api.h(ALICE))
    assert (r.json()["version"], r.json()["attributes"]) == (1, {"name": "First"})


async def test_auth_and_no_leak(api: Api) -> None:
    c = api.client
    assert (await c.get("/v1/records/account/a1")).status_code == 401
    device_token = auth.issue_token(api.settings.jwt_secret, ALICE, auth.DEVICE_AUDIENCE, device_id="d")
    assert (await c.get("/v1/records/account", headers={"Authorization": f"Bearer {device_token}"})).status_code == 401
    await c.post("/v1/records/account", json={"id": "a1", "attributes": {"name": "Alice's"}}, headers=api.h(ALICE))
    # Bob (user depth) sees nothing of Alice's record, whether it exists or not.
    for rid in ("a1", "ghost"):
        r = await c.get(f"/v1/records/account/{rid}", headers=api.h(BOB))
        assert r.status_code == 404 and "Alice" not in r.text
        r = await c.patch(f"/v1/records/account/{rid}", json={"attributes": {"city": "x"}}, headers=api.h(BOB))
        assert r.status_code == 404
    assert (await c.get("/v1/records/account", headers=api.h(BOB))).json()["items"] == []
    assert [i["id"] for i in (await c.get("/v1/records/account", headers=api.h(ADMIN))).json()["items"]] == ["a1"]
    # Creating for someone else's ownership at user depth is forbidden; admin endpoints need is_admin.
    r = await c.post("/v1/records/account", json={"attributes": {"name": "x"}, "owner_id": BOB}, headers=api.h(ALICE))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await c.get("/v1/conflicts", headers=api.h(ALICE))).status_code == 403


@pytest.mark.parametrize(
    "attributes,field",
    [
        ({"city": "x"}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "nope": 1}, "nope"),
        ({"name": "x", "revenue": "abc"}, "revenue"),
    ],
    ids=["required", "type", "unknown", "decimal"],
)
async def test_validation_names_the_field(api: Api, attributes: dict, field: str) -> None:
    r = await api.client.post("/v1/records/account", json={"attributes": attributes}, headers=api.h(ALICE))
    assert r.status_code == 422 and r.json()["error"]["field"] == field


async def test_lookup_must_exist_and_query_filters_page(api: Api) -> None:
    c = api.client
    r = await c.post(
        "/v1/records/contact", json={"attributes": {"lastname": "Li", "account": "nope"}}, headers=api.h(ALICE)
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "account"
    for i in range(5):
        await c.post(
            "/v1/records/account",
            json={"id": f"a{i}", "attributes": {"name": f"n{i}", "city": "Oslo" if i % 2 else "Rome"}},
            headers=api.h(ALICE),
        )
    page1 = (await c.get("/v1/records/account?limit=2&attr.city=Rome", headers=api.h(ALICE))).json()
    assert [i["id"] for i in page1["items"]] == ["a0", "a2"] and page1["next_after"] == "a2"
    page2 = (
        await c.get(f"/v1/records/account?limit=2&attr.city=Rome&after={page1['next_after']}", headers=api.h(ALICE))
    ).json()
    assert [i["id"] for i in page2["items"]] == ["a4"]
    assert (await c.get("/v1/records/account?attr.bogus=1", headers=api.h(ALICE))).json()["error"][
        "field"
    ] == "attr.bogus"
    # Carol (business-unit depth in east) sees none of the sales records.
    assert (await c.get("/v1/records/account", headers=api.h(CAROL))).json()["items"] == []


async def test_query_filters_compare_by_attribute_type(api: Api) -> None:
    c = api.client
    for rid, revenue in (("q1", 1000), ("q2", 1000.0), ("q3", 999.5), ("q4", None)):
        attrs = {"name": rid.upper(), "revenue": revenue} if revenue is not None else {"name": rid.upper()}
        assert (
            await c.post("/v1/records/account", json={"id": rid, "attributes": attrs}, headers=api.h(ALICE))
        ).status_code == 201
    # Bug #14.4: a numeric string is refused on write, not stored to be matched by one reader only.
    r = await c.post(
        "/v1/records/account",
        json={"id": "q5", "attributes": {"name": "q5", "revenue": "1000.00"}},
        headers=api.h(ALICE),
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "revenue", r.text
    found = (await c.get("/v1/records/account?attr.revenue=1e3", headers=api.h(ALICE))).json()["items"]
    assert [i["id"] for i in found] == ["q1", "q2"]
    # Bug #14.5: text compares without regard to case, as in filters.
    found = (await c.get("/v1/records/account?attr.name=q3", headers=api.h(ALICE))).json()["items"]
    assert [i["id"] for i in found] == ["q3"]
    found = (await c.get("/v1/records/account?attr.revenue=999.50", headers=api.h(ALICE))).json()["items"]
    assert [i["id"] for i in found] == ["q3"]
    bad = await c.get("/v1/records/account?attr.revenue=lots", headers=api.h(ALICE))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "attr.revenue", bad.text


async def test_bulk_import_is_fast_all_or_nothing_and_emits_events(api: Api) -> None:
    c = api.client
    n = 20_000
    body = b"\n".join(orjson.dumps({"id": f"r{i}", "attributes": {"name": f"n{i}", "revenue": i}}) for i in range(n))
    t0 = time.perf_counter()
    r = await c.post("/v1/records/account/import", content=body, headers=api.h(ADMIN), timeout=60)
    elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    assert r.json() == {"imported": n, "created": n, "updated": 0}
    print(f"bulk import: {n / elapsed:,.0f} records/s")
    changes = await read_record_changes(
        api.settings.kafka_bootstrap, topics_for(api.settings.topic_prefix).records, n, timeout=60
    )
    assert len({c["id"] for c in changes}) == n
    # Re-import updates (version 2); one bad line anywhere aborts everything.
    r = await c.post(
        "/v1/records/account/import", content=b'{"id":"r1","attributes":{"name":"again"}}\n', headers=api.h(ADMIN)
    )
    assert r.json()["updated"] == 1
    bad = b'{"id":"x1","attributes":{"name":"ok"}}\n{"id":"x2","attributes":{"city":"no name"}}\n'
    r = await c.post("/v1/records/account/import", content=bad, headers=api.h(ADMIN))
    assert r.status_code == 422 and r.json()["error"]["field"] == "name" and "line 2" in r.json()["error"]["message"]
    assert await api.org.record("account", "x1") is None
    rec = await api.org.record("account", "r1")
    assert rec is not None and (rec["version"], rec["attributes"]) == (2, {"name": "again"})


async def test_ledger_listing_and_reapply_after_fix(api: Api) -> None:
    c = api.client
    ap = BatchApplier(api.org.pool, topics_for(api.settings.topic_prefix))
    # Bob may not create contacts for the sales team... give him no contact privilege at all.
    await api.org.pool.execute(
        """UPDATE admin.roles SET privileges = '{"account": {"create": "user", "read": "user", "write": "user"}}'
            WHERE id = 'salesperson'"""
    )
    [ans] = await ap.apply([batch(BOB, "dev-b", change(0, "create", "contact", "c1", lastname="Li"))])
    assert ans.results[0].code == "forbidden"
    errs = (await c.get("/v1/sync-errors?code=forbidden", headers=api.h(ADMIN))).json()["items"]
    assert [(e["user_id"], e["device_id"], e["record_id"], e["status"]) for e in errs] == [(BOB, "dev-b", "c1", "open")]
    assert errs[0]["change"]["fields"] == {"lastname": "Li"}
    # Fix the cause (grant contact create) and re-apply: applied, and the device is told.
    await api.org.pool.execute(
        """UPDATE admin.roles SET privileges = privileges || '{"contact": {"create": "user", "read": "user"}}' WHERE id = 'salesperson'"""
    )
    r = await c.post(f"/v1/sync-errors/{errs[0]['id']}/reapply", headers=api.h(ADMIN))
    assert r.status_code == 200 and r.json()["status"] == "reapplied" and r.json()["result"]["version"] == 1
    results = [
        e
        for e in await read_topic(
            api.settings.kafka_bootstrap, topics_for(api.settings.topic_prefix).batch_results, 2, distinct=True
        )
        if e["key"] == "dev-b"
    ]
    # Delivery is at least once and the first batch's answer may come again: find the re-apply's.
    reapplied = [e for e in results if e["payload"]["batch_id"].endswith(f":reapply:{errs[0]['id']}")]
    assert reapplied and {e["payload"]["results"][0]["status"] for e in reapplied} == {"applied"}
    assert (await c.post(f"/v1/sync-errors/{errs[0]['id']}/reapply", headers=api.h(ADMIN))).status_code == 409
    # Conflicts list filters.
    await api.org.set_policy(True)
    await ap.apply([batch(BOB, "dev-b", change(0, "create", "account", "a1", name="A"))])
    await ap.apply([batch(BOB, "dev-c", change(0, "update", "account", "a1", 1, city="s"))])
    await ap.apply([batch(BOB, "dev-b", change(0, "update", "account", "a1", 1, city="d"))])
    items = (await c.get("/v1/conflicts?entity=account&outcome=server_wins", headers=api.h(ADMIN))).json()["items"]
    assert len(items) == 1 and items[0]["device_id"] == "dev-b" and items[0]["policy"] == "server_wins"
    assert (await c.get("/v1/conflicts?outcome=client_wins", headers=api.h(ADMIN))).json()["items"] == []


async def test_batch_writes_in_one_transaction_announced_by_one_event(api: Api) -> None:
    c = api.client
    await c.post("/v1/records/account", json={"id": "a1", "attributes": {"name": "Acme"}}, headers=api.h(ALICE))
    body = {
        "changes": [
            {"op": "create", "id": "a2", "attributes": {"name": "Beta"}},
            {"op": "update", "id": "a1", "attributes": {"city": "Oslo"}, "if_match": 1},
            {
                "op": "update",
                "id": "a1",
                "attributes": {"city": "Bergen"},
                "if_match": 2,
            },  # builds on the change before
            {"op": "update", "id": "a2", "attributes": {"city": "Rome"}},
            {"op": "delete", "id": "a2"},
        ]
    }
    r = await c.post("/v1/records/account/batch", json=body, headers=api.h(ALICE))
    assert r.status_code == 200, r.text
    out = r.json()
    assert [(i["op"], i["id"], i["version"], i["deleted"]) for i in out["items"]] == [
        ("create", "a2", 1, False),
        ("update", "a1", 2, False),
        ("update", "a1", 3, False),
        ("update", "a2", 2, False),
        ("delete", "a2", 3, True),
    ]
    a1 = await api.org.record("account", "a1")
    assert a1 is not None and (a1["version"], a1["attributes"]) == (3, {"name": "Acme", "city": "Bergen"})
    assert a1["modified_at"].isoformat() == out["modified_at"]  # the one commit time of the batch
    events = await read_topic(
        api.settings.kafka_bootstrap,
        topics_for(api.settings.topic_prefix).records,
        1,
        distinct=True,
        until=lambda got: len(record_changes(got)) >= 6,
    )
    # One event per transaction, its records in the order written; two events' records may
    # arrive in any order (consumers are state-based). Delivery is at least once (distinct).
    batch_event = [e["payload"]["records"] for e in events if len(e["payload"]["records"]) == 5]
    assert [(c["id"], c["version"]) for c in batch_event[0]] == [("a2", 1), ("a1", 2), ("a1", 3), ("a2", 2), ("a2", 3)]
    seen = [(c["id"], c["version"], c["deleted"]) for c in record_changes(events)]
    assert sorted(set(seen)) == [
        ("a1", 1, False),
        ("a1", 2, False),
        ("a1", 3, False),
        ("a2", 1, False),
        ("a2", 2, False),
        ("a2", 3, True),
    ]
    assert {c["source"]["api"] for c in record_changes(events)} == {ALICE}


@pytest.mark.parametrize(
    "bad,status,code,field",
    [
        ({"op": "update", "id": "a1", "attributes": {"name": 5}}, 422, "validation", "name"),
        ({"op": "update", "id": "a1", "attributes": {"city": "x"}, "if_match": 7}, 412, "precondition_failed", None),
        ({"op": "update", "id": "ghost", "attributes": {"city": "x"}}, 404, "not_found", None),
        ({"op": "create", "id": "a1", "attributes": {"name": "again"}}, 409, "conflict", None),
        ({"op": "update", "id": "a1", "attributes": {"city": "nul\u0000"}}, 422, "validation", "attributes"),
    ],
    ids=["validation", "if_match", "missing", "exists", "nul"],
)
async def test_batch_is_all_or_nothing_and_names_the_change(
    api: Api, bad: dict, status: int, code: str, field: str | None
) -> None:
    c = api.client
    await c.post("/v1/records/account", json={"id": "a1", "attributes": {"name": "Acme"}}, headers=api.h(ALICE))
    body = {
        "changes": [
            {"op": "create", "id": "ok", "attributes": {"name": "fine"}},
            {"op": "update", "id": "a1", "attributes": {"city": "Oslo"}},
            bad,
        ]
    }
    r = await c.post("/v1/records/account/batch", json=body, headers=api.h(ALICE))
    err = r.json()["error"]
    assert (r.status_code, err["code"], err.get("field")) == (status, code, field), r.text
    if code != "validation" or field != "attributes":  # NUL is refused by the database, for the batch as a whole
        assert err["details"] == {"index": 2, "id": bad["id"]} and err["message"].startswith("changes[2]")
    assert await api.org.record("account", "ok") is None
    a1 = await api.org.record("account", "a1")
    assert a1 is not None and a1["version"] == 1


async def test_batch_authorizes_each_change_without_leaks(api: Api) -> None:
    c = api.client
    await c.post("/v1/records/account", json={"id": "a1", "attributes": {"name": "Alice's"}}, headers=api.h(ALICE))
    body = {
        "changes": [
            {"op": "create", "id": "b1", "attributes": {"name": "Bob's"}},
            {"op": "update", "id": "a1", "attributes": {"city": "x"}},
        ]
    }
    r = await c.post("/v1/records/account/batch", json=body, headers=api.h(BOB))
    assert r.status_code == 404 and "Alice" not in r.text
    assert await api.org.record("account", "b1") is None
    other = {"changes": [{"op": "create", "attributes": {"name": "x"}, "owner_id": ALICE}]}
    assert (await c.post("/v1/records/account/batch", json=other, headers=api.h(BOB))).status_code == 403
    assert (await c.post("/v1/records/account/batch", json=body)).status_code == 401


@pytest.mark.parametrize(
    "body,field",
    [
        ({"changes": []}, "changes"),
        ({"changes": [{"op": "update", "attributes": {"name": f"n{i}"}, "id": "a"} for i in range(1001)]}, "changes"),
        ({"changes": [{"op": "update", "attributes": {"city": "x"}}]}, "changes.0.id"),
        ({"changes": [{"op": "upsert", "id": "a"}]}, "changes.0.op"),
        ({"changes": [{"op": "update", "id": "a", "if_match": -1}]}, "changes.0.if_match"),
        ({"items": []}, "changes"),
    ],
    ids=["empty", "too-many", "no-id", "bad-op", "bad-version", "wrong-key"],
)
async def test_batch_request_shape_is_checked(api: Api, body: dict, field: str) -> None:
    r = await api.client.post("/v1/records/account/batch", json=body, headers=api.h(ALICE))
    assert r.status_code in (400, 422) and r.json()["error"]["field"] == field, r.text


async def test_a_records_business_unit_follows_its_owner(api: Api) -> None:
    """Bug #14.2: the owning business unit is the owner's, in the single, batch and import
    endpoints; a business_unit_id that differs from the owner's is refused, never dropped."""
    c = api.client
    r = await c.post(  # admin (root) creates a record owned by Carol (east)
        "/v1/records/account", json={"id": "o1", "attributes": {"name": "o1"}, "owner_id": CAROL}, headers=api.h(ADMIN)
    )
    assert r.status_code == 201 and r.json()["business_unit_id"] == "east", r.text
    r = await c.post(
        "/v1/records/account/batch",
        json={"changes": [{"op": "create", "id": "o2", "attributes": {"name": "o2"}, "owner_id": CAROL}]},
        headers=api.h(ADMIN),
    )
    assert r.status_code == 200, r.text
    assert (await api.org.record("account", "o2"))["business_unit_id"] == "east"  # type: ignore[index]
    body = orjson.dumps({"id": "o3", "attributes": {"name": "o3"}, "owner_id": CAROL})
    assert (await c.post("/v1/records/account/import", content=body, headers=api.h(ADMIN))).status_code == 200
    assert (await api.org.record("account", "o3"))["business_unit_id"] == "east"  # type: ignore[index]
    for body_json in (
        {"id": "o4", "attributes": {"name": "o4"}, "owner_id": CAROL, "business_unit_id": "sales"},
        {"id": "o5", "attributes": {"name": "o5"}, "business_unit_id": "east"},  # owner defaults to the caller
    ):
        r = await c.post("/v1/records/account", json=body_json, headers=api.h(ADMIN))
        assert r.status_code == 422 and r.json()["error"]["field"] == "business_unit_id", r.text
    r = await c.post(
        "/v1/records/account",
        json={"id": "o6", "attributes": {"name": "o6"}, "business_unit_id": "root"},
        headers=api.h(ADMIN),
    )
    assert r.status_code == 201 and r.json()["owner_id"] == ADMIN, r.text


async def test_create_checks_owner_and_business_unit(api: Api) -> None:
    """Bug #14.3: a user-level creator cannot place their record in another (or a nonexistent)
    business unit, and a nonexistent owner is refused."""
    c = api.client
    for body_json, field in (
        ({"id": "x1", "attributes": {"name": "x"}, "owner_id": ALICE, "business_unit_id": "east"}, "business_unit_id"),
        (
            {"id": "x2", "attributes": {"name": "x"}, "owner_id": ALICE, "business_unit_id": "nowhere"},
            "business_unit_id",
        ),
        ({"id": "x3", "attributes": {"name": "x"}, "owner_id": "ghost"}, "owner_id"),
        ({"id": "x4", "attributes": {"name": "x"}, "owner_id": "ghost-team", "owner_type": "team"}, "owner_id"),
    ):
        r = await c.post("/v1/records/account", json=body_json, headers=api.h(ALICE))
        assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
        assert await api.org.record("account", body_json["id"]) is None  # type: ignore[arg-type]
    bad = orjson.dumps({"id": "x5", "attributes": {"name": "x"}, "owner_id": "ghost"})
    r = await c.post("/v1/records/account/import", content=bad, headers=api.h(ADMIN))
    assert r.status_code == 422 and r.json()["error"]["field"] == "owner_id", r.text


async def test_lookup_to_an_unreadable_record_answers_as_a_missing_one(api: Api) -> None:
    """Bug #14.7: validation does not reveal whether a record the user cannot read exists."""
    c = api.client
    r = await c.post(  # Bob's account: Alice (user depth) cannot read it
        "/v1/records/account", json={"id": "bobs", "attributes": {"name": "Bob's"}}, headers=api.h(BOB)
    )
    assert r.status_code == 201
    answers = []
    for target in ("bobs", "does-not-exist"):
        r = await c.post(
            "/v1/records/contact",
            json={"id": f"c-{target}", "attributes": {"lastname": "Li", "account": target}},
            headers=api.h(ALICE),
        )
        answers.append((r.status_code, r.json()["error"]["field"], r.json()["error"]["message"].replace(target, "…")))
    assert answers[0] == answers[1] and answers[0][:2] == (422, "account"), answers
    r = await c.post(  # her own account is a valid target
        "/v1/records/account", json={"id": "alices", "attributes": {"name": "Alice's"}}, headers=api.h(ALICE)
    )
    r = await c.post(
        "/v1/records/contact",
        json={"id": "c-ok", "attributes": {"lastname": "Li", "account": "alices"}},
        headers=api.h(ALICE),
    )
    assert r.status_code == 201, r.text


async def test_a_sync_error_can_be_dismissed_but_not_once_reapplied(api: Api) -> None:
    c = api.client
    ap = BatchApplier(api.org.pool, topics_for(api.settings.topic_prefix))
    await api.org.pool.execute(
        """UPDATE admin.roles SET privileges = '{"account": {"create": "user", "read": "user", "write": "user"}}'
            WHERE id = 'salesperson'"""
    )
    await ap.apply([batch(BOB, "dev-d", change(0, "create", "contact", "d1", lastname="Li"))])
    await ap.apply([batch(BOB, "dev-d", change(1, "create", "contact", "d2", lastname="Wu"))])
    errs = (await c.get("/v1/sync-errors?device_id=dev-d", headers=api.h(ADMIN))).json()["items"]
    first, second = errs[0]["id"], errs[1]["id"]
    r = await c.post(f"/v1/sync-errors/{first}/dismiss", headers=api.h(ADMIN))
    assert r.status_code == 200 and r.json() == {"id": first, "status": "dismissed"}
    listed = (await c.get("/v1/sync-errors?status=dismissed", headers=api.h(ADMIN))).json()["items"]
    assert [e["id"] for e in listed] == [first]
    assert (await c.post(f"/v1/sync-errors/{first}/dismiss", headers=api.h(BOB))).status_code == 403
    assert (await c.post("/v1/sync-errors/999999/dismiss", headers=api.h(ADMIN))).status_code == 404
    await api.org.pool.execute(
        """UPDATE admin.roles SET privileges = privileges || '{"contact": {"create": "user", "read": "user"}}' WHERE id = 'salesperson'"""
    )
    assert (await c.post(f"/v1/sync-errors/{second}/reapply", headers=api.h(ADMIN))).json()["status"] == "reapplied"
    assert (await c.post(f"/v1/sync-errors/{second}/dismiss", headers=api.h(ADMIN))).status_code == 409


async def test_writes_name_their_records_in_a_hint_where_the_doorbell_is(fresh_env: InfraEnv) -> None:
    """With the doorbell (the embedded stack) every transaction that writes records also sends a
    records hint naming them (publish-service starts on them before their events arrive); without
    it, none."""
    import asyncio

    from conflict_service import data_outbox
    from offsync_shared import records_hint

    pool = await migrated_pool(fresh_env.pg_dsn)
    await seed(pool)
    heard: asyncio.Queue[list[tuple[str, str]] | None] = asyncio.Queue()
    listener = await pool.acquire()

    def hear(*args: object) -> None:
        heard.put_nowait(records_hint.decode(str(args[3])))

    await listener.add_listener(records_hint.CHANNEL, hear)
    try:
        for bell in (True, False):
            settings = Settings(**{**fresh_env.settings_kwargs(), "kafka_doorbell": bell}, conflict_consumer=False)
            app = create_app(settings)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
            ):
                api = Api(c, settings, Org(pool))
                assert data_outbox.HINT_RECORDS is bell
                rid = f"hinted-{bell}"
                r = await c.post(
                    "/v1/records/account", json={"id": rid, "attributes": {"name": "A"}}, headers=api.h(ALICE)
                )
                assert r.status_code == 201
                body = b"".join(
                    orjson.dumps({"id": f"{rid}-{i}", "attributes": {"name": "I"}}) + b"\n" for i in range(3)
                )
                r = await c.post("/v1/records/account/import", content=body, headers=api.h(ADMIN))
                assert r.status_code == 200
                if bell:
                    assert await asyncio.wait_for(heard.get(), 10) == [("account", rid)]
                    assert await asyncio.wait_for(heard.get(), 10) == [("account", f"{rid}-{i}") for i in range(3)]
        await listener.fetchval("SELECT 1")  # a round trip: any notification sent before it is in
        assert heard.empty(), "no hint without the doorbell"
    finally:
        await listener.remove_listener(records_hint.CHANNEL, hear)
        await pool.release(listener)
        await pool.close()
