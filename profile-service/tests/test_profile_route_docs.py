"""Pure helpers of the admin routes: a handler's docstring becomes its OpenAPI summary and
description (DocumentedRoute), and a console page gets a route's answer as plain rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from profile_service.console.web import plain
from profile_service.documented_route import DocumentedRoute
from profile_service.validation import retyped


async def one_line() -> None:
    """Read a thing."""


async def two_parts() -> None:
    """Read a thing.

    404 when there is none;
    409 otherwise."""


async def undocumented() -> None:
    pass


@pytest.mark.parametrize(
    ("endpoint", "given", "summary", "description"),
    [
        (one_line, {}, "Read a thing", "Read a thing."),  # FastAPI falls back to the docstring
        (two_parts, {}, "Read a thing", "404 when there is none; 409 otherwise."),
        (two_parts, {"summary": "Given", "description": "Given too"}, "Given", "Given too"),
        (undocumented, {}, None, ""),
    ],
    ids=["summary-only", "summary-and-description", "explicit-wins", "no-docstring"],
)
def test_docstring_gives_summary_and_description(
    endpoint: Callable[[], Any], given: dict[str, Any], summary: str | None, description: str
) -> None:
    router = APIRouter(route_class=DocumentedRoute)
    router.add_api_route("/x", endpoint, **given)
    route = router.routes[0]
    assert isinstance(route, DocumentedRoute)
    assert (route.summary, route.description) == (summary, description)


class Change(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    note: str | None = None


def test_plain_keeps_wire_keys_and_leaves_out_what_was_not_set() -> None:
    assert plain(Change.model_validate({"from": 1})) == {"from": 1}
    assert plain([Change.model_validate({"from": 1, "note": None})]) == [{"from": 1, "note": None}]


@pytest.mark.parametrize(
    ("old", "added", "bad"),
    [
        ({"a": {"type": "string"}}, {"b": {"type": "int"}}, []),
        ({"a": {"type": "string"}}, {"a": {"type": "string", "max_length": 5}}, []),
        ({"a": {"type": "string"}}, {"a": {"type": "int"}}, ["a"]),
        ({"l": {"type": "lookup", "target": "account"}}, {"l": {"type": "lookup", "target": "contact"}}, ["l"]),
    ],
    ids=["new-attribute", "same-type", "other-type", "other-target"],
)
def test_attributes_are_added_never_retyped(old: dict[str, Any], added: dict[str, Any], bad: list[str]) -> None:
    assert retyped(old, added) == bad
