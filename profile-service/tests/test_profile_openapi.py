"""profile-service's OpenAPI document is complete: every JSON route names its 2xx answer's schema,
and every route has a summary and a description (the custom filter shows its typed schema)."""

from __future__ import annotations

from typing import Any

import pytest

from profile_service.app import create_app
from profile_service.settings import Settings


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    doc: dict[str, Any] = create_app(Settings()).openapi()  # no lifespan: nothing connects
    return doc


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_every_route_has_a_summary_a_description_and_a_2xx_schema(openapi: dict[str, Any]) -> None:
    ops = operations(openapi)
    assert len(ops) > 60
    missing = []
    for method, path, op in ops:
        if not op.get("summary") or not op.get("description"):
            missing.append(f"{method} {path}: summary/description")
        answers = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert answers, f"{method} {path} has no 2xx answer"
        if set(answers) == {"204"}:
            continue  # no body
        schemas = [r.get("content", {}).get("application/json", {}).get("schema") for r in answers.values()]
        if not any(schemas):
            missing.append(f"{method} {path}: 2xx schema")
    assert missing == []


def test_the_custom_filter_has_a_typed_schema(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    item = schemas["ItemIn"]["properties"]["filter"]
    kinds = {ref["$ref"].rsplit("/", 1)[1] for ref in item["oneOf"]}
    assert kinds == {"RelatedFilter", "AllFilter", "OtherFilter", "ShorthandFilter", "CustomFilter"}
    assert "eq-useroruserhierarchyandteams" in schemas["Operator"]["enum"]
    assert {"AndGroup", "OrGroup", "AndLevel2", "OrLevel2", "AndLevel3", "OrLevel3"} <= set(schemas)
    # the third level holds conditions only: a fourth is not expressible
    assert schemas["AndLevel3"]["properties"]["and"]["items"] == {"$ref": "#/components/schemas/Condition"}


def test_console_pages_are_not_in_the_api(openapi: dict[str, Any]) -> None:
    assert not [p for p in openapi["paths"] if p.startswith("/console")]
