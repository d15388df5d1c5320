"""Mobile offline profiles over the real PostgreSQL and broker: items and their filters,
relationships, people (one profile per user), ETags, validate with estimates, publish, versions,
clone, app modules and solution export/import."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from profile_harness import Service

from offsync_shared import db
from offsync_stack.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def org(admin: httpx.AsyncClient) -> dict[str, Any]:
    for ent in ("account", "contact", "task", "product", "territory"):
        assert (await admin.patch(f"/v1/entities/{ent}", json={"offline_enabled": True})).status_code == 200
    root = (await admin.get("/v1/business-units")).json()[0]["id"]
    reader = (
        await admin.post(
            "/v1/roles",
            json={
                "name": "Offline reader",
                "read_offline_profile": True,
                "privileges": {"*": {"read": "organization"}},
            },
        )
    ).json()
    for uid in ("alice", "bob", "carol"):
        r = await admin.post(
            "/v1/users", json={"id": uid, "name": uid.title(), "business_unit_id": root, "role_ids": [reader["id"]]}
        )
        assert r.status_code == 201
    await admin.post("/v1/users", json={"id": "norole", "name": "No role", "business_unit_id": root})
    await admin.post("/v1/teams", json={"id": "t1", "name": "T1", "business_unit_id": root, "member_ids": ["alice"]})
    return {"root": root}


async def new_profile(admin: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await admin.post("/v1/profiles", json={"name": name, "description": "d"})
    assert r.status_code == 201, r.text
    return r.json()


async def test_items_filters_relationships_and_etags(admin: httpx.AsyncClient, org: dict[str, Any]) -> None:
    p = await new_profile(admin, "Field sales")
    pid = p["id"]
    r = await admin.post(
        f"/v1/profiles/{pid}/items", json={"entity": "product", "filter": {"kind": "other", "user": True}}
    )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["field"] == "filter.kind" and "related, all, custom" in err["message"]
    r = await admin.post(f"/v1/profiles/{pid}/items", json={"entity": "opportunity", "filter": {"kind": "all"}})
    assert r.status_code == 422 and r.json()["error"]["details"]["problems"][0]["code"] == "entity_not_offline_enabled"
    r = await admin.post(
        f"/v1/profiles/{pid}/items", json={"entity": "account", "filter": {"kind": "user"}, "sync_interval_minutes": 60}
    )
    assert r.status_code == 201
    assert r.json()["items"][0]["filter"] == {"kind": "other", "user": True, "team": False, "business_unit": False}
    etag = r.headers["ETag"]
    # relationship to an entity not yet in the profile
    contact = {
        "entity": "contact",
        "filter": {"kind": "related"},
        "relationships": [{"entity": "account", "attribute": "parentcustomerid"}],
    }
    r = await admin.post(
        f"/v1/profiles/{pid}/items",
        json={**contact, "relationships": [{"entity": "task", "attribute": "regardingobjectid"}]},
    )
    assert (
        r.status_code == 422
        and r.json()["error"]["details"]["problems"][0]["code"] == "relationship_entity_not_in_profile"
    )
    r = await admin.post(f"/v1/profiles/{pid}/items", json=contact, headers={"If-Match": etag})
    assert r.status_code == 201
    assert r.json()["items"][1]["relationships"] == [
        {"entity": "account", "attribute": "parentcustomerid", "side": "self"}
    ]
    # the old ETag is stale now
    r = await admin.patch(f"/v1/profiles/{pid}", json={"description": "x"}, headers={"If-Match": etag})
    assert r.status_code == 412 and r.json()["error"]["code"] == "precondition_failed"
    r = await admin.patch(
        f"/v1/profiles/{pid}/items/account",
        json={
            "relationships": [{"entity": "contact", "attribute": "primarycontactid"}],
            "filter": {
                "kind": "custom",
                "condition": {
                    "or": [
                        {"attribute": "ownerid", "operator": "eq-useroruserteams"},
                        {
                            "and": [
                                {"attribute": "revenue", "operator": "ge", "value": 1000},
                                {"attribute": "name", "operator": "begins-with", "value": "A"},
                            ]
                        },
                    ]
                },
            },
        },
    )
    assert r.status_code == 200, r.text
    # account <-> contact is a cycle with a seed (account's own filter): allowed
    r = await admin.patch(f"/v1/profiles/{pid}/items/account", json={"filter": {"kind": "related"}})
    assert r.status_code == 422 and r.json()["error"]["details"]["problems"][0]["code"] == "relationship_cycle"
    r = await admin.patch(f"/v1/profiles/{pid}/items/account", json={"sync_interval_minutes": 2})
    assert r.status_code == 422
    r = await admin.patch(
        f"/v1/profiles/{pid}/items/account",
        json={"filter": {"kind": "custom", "condition": {"attribute": "revenue", "operator": "like", "value": "1%"}}},
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["problems"][0]["code"] == "operator_type_mismatch"
    assert (await admin.delete(f"/v1/profiles/{pid}/items/account")).status_code == 409  # contact relates to it
    r = await admin.patch("/v1/entities/account", json={"offline_enabled": False})
    assert r.status_code == 409 and "Field sales" in r.json()["error"]["message"]


async def test_people_one_profile_per_user_publish_and_republish(
    service: Service, admin: httpx.AsyncClient, org: dict[str, Any]
) -> None:
    a = await new_profile(admin, "Team A")
    b = await new_profile(admin, "Team B")
    await admin.post(f"/v1/profiles/{a['id']}/items", json={"entity": "account", "filter": {"kind": "all"}})
    await admin.post(f"/v1/profiles/{b['id']}/items", json={"entity": "product", "filter": {"kind": "all"}})
    r = await admin.post(f"/v1/profiles/{a['id']}/users", json={"user_ids": ["alice", "bob"]})
    assert r.status_code == 200 and r.json()["user_ids"] == ["alice", "bob"]
    r = await admin.post(f"/v1/profiles/{b['id']}/users", json={"user_ids": ["bob"]})
    assert r.status_code == 409
    assert "Team A" in r.json()["error"]["message"] and r.json()["error"]["details"]["profile_id"] == a["id"]
    assert (await admin.post(f"/v1/profiles/{a['id']}/users", json={"user_ids": ["ghost"]})).status_code == 422

    r = await admin.post(f"/v1/profiles/{a['id']}/publish")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["published_version"] == 1 and body["has_unpublished_changes"] is False
    # any change, users included, needs a republish
    r = await admin.post(f"/v1/profiles/{a['id']}/users", json={"user_ids": ["carol"]})
    assert r.json()["has_unpublished_changes"] is True
    await admin.patch(
        f"/v1/profiles/{a['id']}/items/account", json={"filter": {"kind": "other", "user": True, "team": True}}
    )
    r = await admin.post(f"/v1/profiles/{a['id']}/publish", headers={"If-Match": '"1"'})
    assert r.status_code == 412
    r = await admin.post(f"/v1/profiles/{a['id']}/publish")
    assert r.json()["published_version"] == 2
    versions = (await admin.get(f"/v1/profiles/{a['id']}/versions")).json()
    assert [v["version"] for v in versions] == [1, 2]
    d = (await admin.get(f"/v1/profiles/{a['id']}/versions/diff", params={"from": 1, "to": 2})).json()
    assert d["users_added"] == ["carol"] and d["items_changed"][0]["entity"] == "account"
    snap = (await admin.get(f"/v1/profiles/{a['id']}/versions/1")).json()["snapshot"]
    assert snap["user_ids"] == ["alice", "bob"]  # immutable
    assert (await admin.get(f"/v1/profiles/{a['id']}/versions/9")).status_code == 404

    # moving bob: remove from A, add to B, publish B -> bob's effective profile is B
    await admin.delete(f"/v1/profiles/{a['id']}/users/bob")
    await admin.post(f"/v1/profiles/{b['id']}/users", json={"user_ids": ["bob"]})
    await admin.post(f"/v1/profiles/{b['id']}/publish")
    async with service.app.state.runtime.pool.acquire() as conn:
        rows = {r["user_id"]: r["profile_id"] for r in await conn.fetch("SELECT * FROM admin.published_profile_users")}
    assert rows["bob"] == b["id"] and rows["alice"] == a["id"] and rows["carol"] == a["id"]

    async def published() -> list[dict[str, Any]]:
        return [
            e.payload
            for e in await service.admin_events()
            if e.type == "profile.published" and e.payload["profile_id"] == a["id"]
        ]

    events = await eventually(lambda: _at_least(published, 2), timeout=20, message="ProfilePublished on the broker")
    assert events[-1]["version"] == 2 and events[-1]["user_ids"] == ["alice", "bob", "carol"]
    assert events[-1]["items"][0]["filter"] == {"kind": "other", "user": True, "team": True, "business_unit": False}


async def _at_least(fetch, n: int):
    got = await fetch()
    return got if len(got) >= n else None


async def test_validate_lists_every_problem_with_estimates_and_cap(
    service: Service, admin: httpx.AsyncClient, org: dict[str, Any]
) -> None:
    pool = service.app.state.runtime.pool
    # conflict-service's records table, as it would exist in a full deployment (read-only for us)
    await db.migrate(pool, "data", "conflict_service.migrations")
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes) VALUES ($1,$2,1,$3,$4,$5,$6)",
            [("territory", f"t{i}", "x", "user", org["root"], {"name": f"T{i}"}) for i in range(3)]
            + [
                (
                    "task",
                    f"k{i}",
                    "alice" if i < 2 else "t1",
                    "user" if i < 2 else "team",
                    "elsewhere",
                    {"subject": "s"},
                )
                for i in range(4)
            ]
            + [("account", f"a{i}", "x", "user", org["root"], {"name": f"A{i}", "revenue": 5000}) for i in range(2)],
        )
    p = await new_profile(admin, "Validate me")
    pid = p["id"]
    await admin.post(f"/v1/profiles/{pid}/items", json={"entity": "territory", "filter": {"kind": "business_unit"}})
    await admin.post(
        f"/v1/profiles/{pid}/items", json={"entity": "task", "filter": {"kind": "other", "user": True, "team": True}}
    )
    await admin.post(f"/v1/profiles/{pid}/users", json={"user_ids": ["norole"]})
    await admin.post(
        "/v1/users", json={"id": "dave", "name": "Dave", "business_unit_id": org["root"], "team_ids": ["t1"]}
    )
    await admin.post(f"/v1/profiles/{pid}/users", json={"user_ids": ["dave"]})
    report = (await admin.post(f"/v1/profiles/{pid}/validate")).json()
    assert report["valid"] is True
    assert {(p["code"], p.get("user_id")) for p in report["problems"]} == {
        ("user_cannot_read_profile", "norole"),
        ("user_cannot_read_profile", "dave"),
    }
    est = {e["user_id"]: e for e in report["estimates"]}
    assert est["dave"]["records"] == 3 + 2 and est["norole"]["records"] == 3  # BU territories + team-owned tasks
    assert est["dave"]["bytes"] > 0 and est["dave"]["exact"] is True
    async with pool.acquire() as conn:  # a deleted team task: a tombstone the devices never carry
        await conn.execute(
            """INSERT INTO data.records(entity, id, version, owner_id, owner_type, business_unit_id, attributes, deleted)
               VALUES ('task', 'k-gone', 2, 't1', 'team', 'elsewhere', '{}', true)"""
        )
    # the org cap on records per user fails validation with the users and items over it
    await admin.patch("/v1/org-settings", json={"max_records_per_user": 5})
    try:
        # at the cap exactly: the publish's quick bound counts the tombstone (8 records of the
        # exact items' entities, over 5), the per-user count does not (dave: 5)
        assert (await admin.post(f"/v1/profiles/{pid}/publish")).status_code == 200
        report = (await admin.post(f"/v1/profiles/{pid}/validate")).json()
        assert report["valid"] is True and {e["user_id"]: e["records"] for e in report["estimates"]}["dave"] == 5
        await admin.patch("/v1/org-settings", json={"max_records_per_user": 4})
        report = (await admin.post(f"/v1/profiles/{pid}/validate")).json()
        assert report["valid"] is False
        cap = [p for p in report["problems"] if p["code"] == "records_per_user_cap"]
        assert [p["user_id"] for p in cap] == ["dave"] and cap[0]["details"]["items"] == ["task", "territory"]
        r = await admin.post(f"/v1/profiles/{pid}/publish")
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation"
        # over the cap only through an upper bound (a custom filter counts every account): a
        # warning naming the bounded items, and the profile still publishes
        await admin.patch("/v1/org-settings", json={"max_records_per_user": 5})
        await admin.post(
            f"/v1/profiles/{pid}/items",
            json={
                "entity": "account",
                "filter": {"kind": "custom", "condition": {"attribute": "revenue", "operator": "ge", "value": 1000}},
            },
        )
        report = (await admin.post(f"/v1/profiles/{pid}/validate")).json()
        assert report["valid"] is True
        possible = [p for p in report["problems"] if p["code"] == "records_per_user_cap_possible"]
        assert [(p["user_id"], p["severity"]) for p in possible] == [("dave", "warning")]
        assert possible[0]["details"] | {"items": None} == {
            "records": 7,
            "exact_records": 5,
            "cap": 5,
            "items": None,
            "bounded": ["account"],
        }
        assert (await admin.post(f"/v1/profiles/{pid}/publish")).status_code == 200
    finally:
        await admin.patch("/v1/org-settings", json={"max_records_per_user": 3000000})


async def test_clone_app_modules_and_delete(admin: httpx.AsyncClient, org: dict[str, Any]) -> None:
    p = await new_profile(admin, "Source")
    await admin.post(
        f"/v1/profiles/{p['id']}/items",
        json={"entity": "product", "filter": {"kind": "all"}, "sync_interval_minutes": 1440},
    )
    await admin.post("/v1/users", json={"id": "erin", "name": "Erin", "business_unit_id": org["root"]})
    await admin.post(f"/v1/profiles/{p['id']}/users", json={"user_ids": ["erin"]})
    r = await admin.post(f"/v1/profiles/{p['id']}/clone", json={"name": "Copy"})
    assert r.status_code == 201
    c = r.json()
    assert c["items"][0]["sync_interval_minutes"] == 1440 and c["user_ids"] == [] and c["published_version"] is None
    assert (await admin.post(f"/v1/profiles/{p['id']}/clone", json={"name": "Copy"})).status_code == 409
    app = (await admin.post("/v1/app-modules", json={"name": "Sales Hub"})).json()
    r = await admin.put(f"/v1/app-modules/{app['id']}/profiles/{p['id']}")
    assert r.status_code == 422  # offline not enabled on the app yet
    await admin.patch(f"/v1/app-modules/{app['id']}", json={"offline_enabled": True})
    await admin.put(f"/v1/app-modules/{app['id']}/profiles/{p['id']}")
    r = await admin.put(f"/v1/app-modules/{app['id']}/profiles/{c['id']}")
    assert r.json()["profile_ids"] == sorted([p["id"], c["id"]])
    assert (await admin.delete(f"/v1/profiles/{c['id']}")).status_code == 204
    assert (await admin.get(f"/v1/app-modules/{app['id']}")).json()["profile_ids"] == [p["id"]]
    assert (await admin.get(f"/v1/profiles/{c['id']}")).status_code == 404


async def test_export_import_round_trip_is_all_or_nothing(admin: httpx.AsyncClient, org: dict[str, Any]) -> None:
    await admin.post(
        "/v1/entities",
        json={
            "logical_name": "inspection",
            "display_name": "Inspection",
            "ownership": "user_or_team",
            "offline_enabled": True,
            "attributes": {"accountid": {"type": "lookup", "target": "account"}, "score": {"type": "int"}},
        },
    )
    p = await new_profile(admin, "Exported")
    await admin.post(f"/v1/profiles/{p['id']}/items", json={"entity": "account", "filter": {"kind": "all"}})
    await admin.post(
        f"/v1/profiles/{p['id']}/items",
        json={
            "entity": "inspection",
            "filter": {"kind": "custom", "condition": {"attribute": "score", "operator": "gt", "value": 3}},
            "relationships": [{"entity": "account", "attribute": "accountid"}],
        },
    )
    await admin.post(f"/v1/profiles/{p['id']}/publish")
    solution = (await admin.get("/v1/solutions/export", params={"profile_id": p["id"]})).json()
    # the items' entities plus their lookup targets (account -> contact)
    assert [e["logical_name"] for e in solution["entities"]] == ["account", "contact", "inspection"]
    assert solution["profiles"][0]["name"] == "Exported"

    # a broken solution changes nothing and lists every problem
    broken = {
        **solution,
        "profiles": [
            *solution["profiles"],
            {
                "name": "Bad",
                "items": [
                    {"entity": "product", "filter": {"kind": "other", "user": True}},
                    {"entity": "nosuch", "filter": {"kind": "all"}},
                ],
            },
        ],
    }
    r = await admin.post("/v1/solutions/import", json=broken)
    assert r.status_code == 422
    codes = {p["code"] for p in r.json()["error"]["details"]["problems"]}
    assert {"filter_not_allowed", "unknown_entity"} <= codes
    names = {x["name"] for x in (await admin.get("/v1/profiles")).json()}
    assert "Bad" not in names

    renamed = {**solution, "profiles": [{**solution["profiles"][0], "name": "Imported"}]}
    r = await admin.post("/v1/solutions/import", json=renamed)
    assert r.status_code == 200, r.text
    imported = r.json()["profiles"][0]
    assert imported["created"] is True
    got = (await admin.get(f"/v1/profiles/{imported['id']}")).json()
    assert got["published_version"] is None and got["has_unpublished_changes"] is True
    original = (await admin.get(f"/v1/profiles/{p['id']}")).json()
    assert got["items"] == original["items"]
    # importing over an existing profile replaces its items and leaves it to be published
    r = await admin.post("/v1/solutions/import", json=solution)
    assert r.json()["profiles"][0] == {"id": p["id"], "name": "Exported", "created": False}
    assert (await admin.get(f"/v1/profiles/{p['id']}")).json()["has_unpublished_changes"] is True


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/profiles", {"name": "nul\x00name"}),
        ("post", "/v1/profiles", {"name": ""}),
        ("post", "/v1/profiles", {"name": "x", "unknown": 1}),
        ("post", "/v1/users", {"name": "x", "business_unit_id": "a b"}),
        ("post", "/v1/users", {"name": "x", "business_unit_id": "bu", "language": 10**30}),
        ("get", "/v1/profiles/%00", None),
        ("patch", "/v1/org-settings", {"max_records_per_user": -1}),
        ("post", "/v1/tokens", {"user_id": "x", "audience": "root"}),
        (
            "post",
            "/v1/solutions/import",
            {
                "profiles": [
                    {
                        "name": "p",
                        "items": [{"entity": "account", "filter": {"kind": "all"}, "sync_interval_minutes": 10**40}],
                    }
                ]
            },
        ),
        ("post", "/v1/entities", {"logical_name": "Bad Name", "display_name": "x", "ownership": "none"}),
    ],
    ids=[
        "nul",
        "empty-name",
        "extra-field",
        "bad-id",
        "huge-int",
        "nul-path",
        "negative-cap",
        "bad-audience",
        "import-huge-int",
        "bad-logical-name",
    ],
)
async def test_bad_input_is_a_json_4xx(admin: httpx.AsyncClient, method: str, path: str, body: Any) -> None:
    r = await admin.request(method, path, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] and r.json()["error"]["message"]


async def test_concurrent_edits_one_wins_the_other_gets_412_or_409(
    admin: httpx.AsyncClient, org: dict[str, Any]
) -> None:
    import asyncio

    p = await new_profile(admin, "Race")
    q = await new_profile(admin, "Race 2")
    etag = (await admin.get(f"/v1/profiles/{p['id']}")).headers["ETag"]
    r1, r2 = await asyncio.gather(
        admin.patch(f"/v1/profiles/{p['id']}", json={"description": "one"}, headers={"If-Match": etag}),
        admin.patch(f"/v1/profiles/{p['id']}", json={"description": "two"}, headers={"If-Match": etag}),
    )
    assert sorted([r1.status_code, r2.status_code]) == [200, 412]
    await admin.post("/v1/users", json={"id": "frank", "name": "Frank", "business_unit_id": org["root"]})
    r1, r2 = await asyncio.gather(
        admin.post(f"/v1/profiles/{p['id']}/users", json={"user_ids": ["frank"]}),
        admin.post(f"/v1/profiles/{q['id']}/users", json={"user_ids": ["frank"]}),
    )
    assert sorted([r1.status_code, r2.status_code]) == [200, 409]
