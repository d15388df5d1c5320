"""Finding 6: NUL bytes in query values, ids, owner ids and import lines, `after` beyond a
bigint and instants outside the calendar got 500s; an upload whose record or batch id held a
NUL was never answered (dead-lettered on every resend) or closed the session with 1011. Each is
now refused at the edge with a clear 4xx or error frame, and the session goes on."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from offsync_shared import protocol as p
from tests.security.conftest import ADMIN_HEADERS, ROOT_BU, Findings, device_token
from tests.security.wsclient import answers_ping, open_session, until

pytestmark = pytest.mark.e2e

RECORDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "nul-query-value": ("GET", "/v1/records/account?owner_id=a%00b", {}),
    "nul-attr-filter": ("GET", "/v1/records/account?attr.name=a%00b", {}),
    "nul-after-cursor": ("GET", "/v1/records/account?after=%00", {}),
    "nul-record-id-path": ("GET", "/v1/records/account/a%00b", {}),
    "nul-record-id-patch": ("PATCH", "/v1/records/account/a%00b", {"json": {"attributes": {"name": "n"}}}),
    "nul-entity-path": ("GET", "/v1/records/acc%00ount", {}),
    "nul-owner-id": ("POST", "/v1/records/account", {"json": {"attributes": {"name": "n"}, "owner_id": "a\x00b"}}),
    "nul-business-unit": (
        "POST",
        "/v1/records/account",
        {"json": {"attributes": {"name": "n"}, "owner_id": "ann", "business_unit_id": "b\x00u"}},
    ),
    "nul-batch-owner": (
        "POST",
        "/v1/records/account/batch",
        {"json": {"changes": [{"op": "create", "attributes": {"name": "n"}, "owner_id": "x\x00"}]}},
    ),
    "nul-import-line": (
        "POST",
        "/v1/records/account/import",
        {"content": b'{"id": "i\\u0000d", "attributes": {"name": "n"}}\n'},
    ),
    "nul-import-owner": (
        "POST",
        "/v1/records/account/import",
        {"content": b'{"attributes": {"name": "n"}, "owner_id": "o\\u0000"}\n'},
    ),
    "after-beyond-bigint": ("GET", "/v1/conflicts?after=9223372036854775808", {}),
    "sync-errors-after-beyond-bigint": ("GET", "/v1/sync-errors?after=9223372036854775808", {}),
    "reapply-id-beyond-bigint": ("POST", "/v1/sync-errors/9223372036854775808/reapply", {}),
    "instant-before-year-1": ("GET", "/v1/records/account?modified_since=0001-01-01T00:00:00%2B14:00", {}),
    "instant-after-9999": ("GET", "/v1/conflicts?since=9999-12-31T23:00:00-14:00", {}),
}
ADMIN: dict[str, tuple[str, str, dict[str, Any]]] = {
    "nul-user-id-path": ("GET", "/v1/users/a%00b", {}),
    "nul-role-patch": ("PATCH", "/v1/roles/r%00", {"json": {"name": "x"}}),
    "nul-query": ("GET", "/v1/audit?actor_id=%00", {}),
    "nul-user-body": ("POST", "/v1/users", {"json": {"id": "u\x00", "name": "n", "business_unit_id": ROOT_BU}}),
    "nul-token-user": ("POST", "/v1/tokens", {"json": {"user_id": "u\x00", "audience": "admin"}}),
}


async def _call(base: str, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base, headers=ADMIN_HEADERS, timeout=30) as c:
        return await c.request(method, path, **kwargs)


@pytest.mark.parametrize("name", list(RECORDS), ids=list(RECORDS))
async def test_records_api_refuses_bad_values_with_a_4xx(findings: Findings, name: str) -> None:
    method, path, kwargs = RECORDS[name]
    r = await _call(findings.stack.records_url, method, path, kwargs)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
    assert "error" in r.json()


@pytest.mark.parametrize("name", list(ADMIN), ids=list(ADMIN))
async def test_admin_api_refuses_bad_values_with_a_4xx(findings: Findings, name: str) -> None:
    method, path, kwargs = ADMIN[name]
    r = await _call(findings.stack.admin_url, method, path, kwargs)
    assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
    assert "error" in r.json()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "upload", "batch_id": "b\x00", "changes": []},
        {
            "type": "upload",
            "batch_id": "nul-record",
            "changes": [{"seq": 0, "op": "create", "entity": "account", "id": "r\x00", "fields": {"name": "n"}}],
        },
        {
            "type": "upload",
            "batch_id": "nul-field",
            "changes": [{"seq": 0, "op": "create", "entity": "account", "id": "r1", "fields": {"name": "n\x00"}}],
        },
    ],
    ids=["nul-batch-id", "nul-record-id", "nul-field-value"],
)
async def test_an_upload_with_nul_gets_an_error_frame_and_the_session_goes_on(
    findings: Findings, frame: dict[str, Any]
) -> None:
    ws = await open_session(findings.stack.sync_ws, device_token("ann", "nul-phone"), "nul-phone")
    try:
        await ws.send(orjson.dumps(frame).decode())
        err = await until(ws, lambda f: isinstance(f, p.Error))
        assert err.code == p.ERR_BAD_FRAME and "NUL" in err.message, err
        assert await answers_ping(ws)
        # The device can still upload a proper batch and gets its answer.
        bid = str(uuid.uuid4())
        good = p.Upload(bid, (p.Change(0, "create", "account", bid, fields={"name": "fine"}),))
        await ws.send(p.encode(good).decode())
        result = await until(ws, lambda f: isinstance(f, p.Result) and f.batch_id == bid, timeout=30)
        assert result.results[0].status == "applied", result
    finally:
        await ws.close()
