"""The OpenAPI document of conflict-service is complete: every route has a summary, a
description and a response schema for its success answer (none only for a 204)."""

from __future__ import annotations

from typing import Any

import pytest

from conflict_service.app import create_app
from conflict_service.settings import Settings

OPENAPI = create_app(Settings()).openapi()
OPERATIONS = [
    (f"{method.upper()} {path}", op)
    for path, item in OPENAPI["paths"].items()
    for method, op in item.items()
    if method in ("get", "post", "put", "patch", "delete")
]
# The service app's own endpoints (health, readiness, metrics) are the shared edge's, not ours.
OURS = [(name, op) for name, op in OPERATIONS if name.split()[1].startswith("/v1/")]


def test_every_records_and_admin_route_is_listed() -> None:
    assert {name for name, _ in OURS} >= {
        "POST /v1/records/{entity}",
        "GET /v1/records/{entity}",
        "GET /v1/records/{entity}/{record_id}",
        "PATCH /v1/records/{entity}/{record_id}",
        "DELETE /v1/records/{entity}/{record_id}",
        "POST /v1/records/{entity}/batch",
        "POST /v1/records/{entity}/import",
        "GET /v1/conflicts",
        "GET /v1/sync-errors",
        "POST /v1/sync-errors/{error_id}/reapply",
        "POST /v1/sync-errors/{error_id}/dismiss",
    }


@pytest.mark.parametrize("op", [op for _, op in OURS], ids=[name for name, _ in OURS])
def test_route_has_summary_description_and_response_schema(op: dict[str, Any]) -> None:
    assert op.get("summary"), "no summary"
    assert op.get("description"), "no description"
    ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
    assert len(ok) == 1, ok
    [(code, response)] = ok.items()
    if code == "204":
        assert not response.get("content"), "a 204 has no body"
        return
    schema = response["content"]["application/json"]["schema"]
    assert "$ref" in schema, f"{code}: not a response model: {schema}"
    model = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert model.get("properties"), model
