"""Bootstrap, authentication/authorization, tokens and the organization model over the real
PostgreSQL and broker, with the app running in-process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from profile_harness import Service

from offsync_shared import db
from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, DEVICE_AUDIENCE, verify_token
from offsync_stack.testing import InfraEnv, eventually
from profile_service.admin_events import Emitter
from profile_service.bootstrap import SYSTEM_ADMIN_ROLE_NAME, bootstrap

pytestmark = pytest.mark.integration


async def test_bootstrap_seeds_an_empty_database_once_even_with_two_replicas(fresh_env: InfraEnv) -> None:
    pool = await db.create_pool(fresh_env.pg_dsn)
    try:
        await db.migrate(pool, "admin", "profile_service.migrations")
        emitter = Emitter(fresh_env.topic_prefix)
        results = await asyncio.gather(bootstrap(pool, emitter), bootstrap(pool, emitter))
        assert sorted(results) == [False, True]
        assert await bootstrap(pool, emitter) is False
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM admin.business_units WHERE parent_id IS NULL") == 1
            role = await conn.fetchrow("SELECT * FROM admin.roles WHERE name = $1", SYSTEM_ADMIN_ROLE_NAME)
            assert role["is_admin"] and role["read_offline_profile"]
            assert role["privileges"] == {
                "*": {
                    "create": "organization",
                    "read": "organization",
                    "write": "organization",
                    "delete": "organization",
                }
            }
            assert (
                await conn.fetchval("SELECT role_id FROM admin.user_roles WHERE user_id = $1", BOOTSTRAP_ADMIN_USER_ID)
                == role["id"]
            )
            ents = {r["logical_name"]: r for r in await conn.fetch("SELECT * FROM admin.entities")}
            assert {k: v["ownership"] for k, v in ents.items()} == {
                "account": "user_or_team",
                "contact": "user_or_team",
                "opportunity": "user_or_team",
                "task": "user_or_team",
                "product": "organization",
                "territory": "business",
            }
            assert not any(e["offline_enabled"] for e in ents.values())
            assert ents["contact"]["attributes"]["parentcustomerid"] == {
                "type": "lookup",
                "required": False,
                "target": "account",
            }
            assert await conn.fetchval("SELECT count(*) FROM admin.org_settings") == 1
            # every seeded thing was announced, once
            assert (
                await conn.fetchval("SELECT count(*) FROM admin.outbox") == 1 + 1 + 1 + 6
            )  # BU, role, admin, entities
    finally:
        await pool.close()


async def test_authentication_and_authorization(service: Service, admin: httpx.AsyncClient) -> None:
    async with service.client() as anon:
        r = await anon.get("/v1/users")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    for bad in ("garbage", service.token(audience=DEVICE_AUDIENCE, device_id="d1"), service.token(ttl_seconds=-60)):
        async with service.client(bad) as c:
            assert (await c.get("/v1/users")).status_code == 401
    async with service.client(service.token("nobody")) as c:
        assert (await c.get("/v1/users")).status_code == 403
    root = (await admin.get("/v1/business-units")).json()[0]["id"]
    await admin.post("/v1/users", json={"id": "plain", "name": "Plain", "business_unit_id": root})
    async with service.client(service.token("plain")) as c:
        r = await c.get("/v1/users")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        # an admin role through a team is enough
        role = (await admin.post("/v1/roles", json={"name": "Team admins", "is_admin": True})).json()
        await admin.post(
            "/v1/teams",
            json={
                "id": "admins",
                "name": "Admins",
                "business_unit_id": root,
                "member_ids": ["plain"],
                "role_ids": [role["id"]],
            },
        )
        assert (await c.get("/v1/users")).status_code == 200
        assert (await admin.patch("/v1/users/plain", json={"enabled": False})).status_code == 200
        assert (await c.get("/v1/users")).status_code == 403


async def test_tokens(service: Service, admin: httpx.AsyncClient) -> None:
    root = (await admin.get("/v1/business-units")).json()[0]["id"]
    await admin.post("/v1/users", json={"id": "tok-user", "name": "T", "business_unit_id": root})
    r = await admin.post(
        "/v1/tokens", json={"user_id": "tok-user", "audience": "device", "device_id": "phone-1", "ttl_seconds": 600}
    )
    assert r.status_code == 201
    p = verify_token(service.settings.jwt_secret, r.json()["token"], DEVICE_AUDIENCE)
    assert (p.user_id, p.device_id) == ("tok-user", "phone-1")
    r = await admin.post("/v1/tokens", json={"user_id": "tok-user", "audience": "admin"})
    assert verify_token(service.settings.jwt_secret, r.json()["token"], ADMIN_AUDIENCE).user_id == "tok-user"
    r = await admin.post("/v1/tokens", json={"user_id": "tok-user", "audience": "device"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "device_id"
    assert (await admin.post("/v1/tokens", json={"user_id": "ghost", "audience": "admin"})).status_code == 404
    async with service.client(service.token("tok-user")) as c:
        assert (await c.post("/v1/tokens", json={"user_id": "tok-user", "audience": "admin"})).status_code == 403


async def test_org_model_crud_and_events_reach_the_broker(service: Service, admin: httpx.AsyncClient) -> None:
    root = (await admin.get("/v1/business-units")).json()[0]["id"]
    sales = (await admin.post("/v1/business-units", json={"id": "sales", "name": "Sales", "parent_id": root})).json()
    assert sales["parent_id"] == root
    await admin.post("/v1/business-units", json={"id": "sales-east", "name": "East", "parent_id": "sales"})
    r = await admin.patch("/v1/business-units/sales", json={"parent_id": "sales-east"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "parent_id"
    assert (
        await admin.post("/v1/business-units", json={"id": "sales", "name": "Dup", "parent_id": root})
    ).status_code == 409
    assert (await admin.post("/v1/business-units", json={"name": "Orphan", "parent_id": "nope"})).status_code == 422

    await admin.post("/v1/users", json={"id": "boss", "name": "Boss", "business_unit_id": "sales", "language": 1033})
    r = await admin.post(
        "/v1/users", json={"id": "rep", "name": "Rep", "business_unit_id": "sales-east", "manager_id": "boss"}
    )
    assert r.status_code == 201 and r.json()["manager_id"] == "boss"
    r = await admin.patch("/v1/users/boss", json={"manager_id": "rep"})
    assert r.status_code == 422  # manager cycle
    role = (
        await admin.post(
            "/v1/roles",
            json={
                "name": "Salesperson",
                "read_offline_profile": True,
                "privileges": {
                    "account": {"read": "business_unit", "write": "user"},
                    "contact": {"read": "parent_child"},
                },
            },
        )
    ).json()
    r = await admin.post("/v1/roles", json={"name": "Broken", "privileges": {"account": {"read": "galaxy"}}})
    assert r.status_code == 422
    assert (
        await admin.post("/v1/roles", json={"name": "Unknown", "privileges": {"nosuch": {"read": "user"}}})
    ).status_code == 422
    assert (await admin.put(f"/v1/users/rep/roles/{role['id']}")).json()["role_ids"] == [role["id"]]
    team = (
        await admin.post("/v1/teams", json={"id": "east-team", "name": "East team", "business_unit_id": "sales-east"})
    ).json()
    assert (await admin.put(f"/v1/teams/{team['id']}/members/rep")).json()["member_ids"] == ["rep"]
    assert (await admin.put(f"/v1/teams/{team['id']}/roles/{role['id']}")).json()["role_ids"] == [role["id"]]
    user = (await admin.get("/v1/users/rep")).json()
    assert user["team_ids"] == ["east-team"] and user["business_unit_id"] == "sales-east"
    assert (await admin.delete("/v1/business-units/sales")).status_code == 409  # has children/users
    r = await admin.patch("/v1/org-settings", json={"conflict_detection": True, "max_records_per_user": 1000})
    assert r.json()["conflict_detection"] is True
    # cannot remove the last admin
    assert (await admin.delete(f"/v1/users/{BOOTSTRAP_ADMIN_USER_ID}")).status_code in (409,)

    def rep_now(payload: dict[str, Any]) -> bool:
        return payload["id"] == "rep" and payload["team_ids"] == ["east-team"] and payload["role_ids"] == [role["id"]]

    async def seen() -> set[str] | None:
        events = await service.admin_events()
        types = {e.type for e in events}
        want = {
            "business_unit.changed",
            "user.changed",
            "role.changed",
            "team.changed",
            "entity.changed",
        }
        # Every type is on the broker well before the last call's events are: wait for rep's
        # state after the team membership itself (it once was not there yet on a slow cluster).
        rep = any(e.type == "user.changed" and rep_now(e.payload) for e in events)
        return types if want <= types and rep else None

    await eventually(seen, timeout=20, message="admin events on the broker, rep's team among them")
    events = await service.admin_events()
    # Org settings are read from admin.org_settings where they are used (conflict-service), not sent.
    assert not [e for e in events if e.type == "org.settings_changed"]


async def test_entity_metadata(admin: httpx.AsyncClient) -> None:
    names = [e["logical_name"] for e in (await admin.get("/v1/entities")).json()]
    assert {"account", "contact", "opportunity", "task", "product", "territory"} <= set(names)
    r = await admin.post(
        "/v1/entities",
        json={
            "logical_name": "visit",
            "display_name": "Visit",
            "ownership": "user_or_team",
            "attributes": {
                "subject": {"type": "string", "required": True},
                "accountid": {"type": "lookup", "target": "account"},
            },
        },
    )
    assert r.status_code == 201 and r.json()["offline_enabled"] is False
    r = await admin.post(
        "/v1/entities",
        json={
            "logical_name": "bad",
            "display_name": "Bad",
            "ownership": "none",
            "attributes": {"x": {"type": "lookup", "target": "nowhere"}},
        },
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "attributes.x.target"
    assert (
        await admin.post("/v1/entities", json={"logical_name": "visit", "display_name": "V", "ownership": "none"})
    ).status_code == 409
    assert (await admin.patch("/v1/entities/visit", json={"offline_enabled": True})).json()["offline_enabled"] is True
    r = await admin.patch("/v1/entities/visit", json={"attributes": {"duration": {"type": "int"}}})
    assert set(r.json()["attributes"]) == {"subject", "accountid", "duration"}
    assert (
        await admin.patch("/v1/entities/visit", json={"attributes": {"subject": {"type": "int"}}})
    ).status_code == 409
    r = await admin.post(
        "/v1/entities",
        json={"logical_name": "ledger", "display_name": "L", "ownership": "organization", "offline_capable": False},
    )
    assert (await admin.patch("/v1/entities/ledger", json={"offline_enabled": True})).status_code == 422
    assert (await admin.get("/v1/entities/nosuch")).status_code == 404
