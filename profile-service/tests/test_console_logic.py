"""The console's pure parts: session cookies and CSRF tokens, safe redirects, and turning form
fields into the admin API's request bodies (table-driven)."""

from __future__ import annotations

import json
import time

import pytest

from offsync_shared.auth import ADMIN_AUDIENCE, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from profile_service import validation
from profile_service.console import forms
from profile_service.console.pages_ops import parse_metrics
from profile_service.console.session import csrf_ok, open_session, read_session
from profile_service.console.web import safe_next

SECRET = DEV_JWT_SECRET


def test_a_session_round_trips_and_carries_its_csrf_token() -> None:
    cookie = open_session(SECRET, "u1")
    s = read_session(SECRET, cookie)
    assert s is not None and s.user_id == "u1"
    assert csrf_ok(s, s.csrf)
    tampered = s.csrf[:-1] + ("1" if s.csrf.endswith("0") else "0")
    assert not csrf_ok(s, "") and not csrf_ok(s, None) and not csrf_ok(s, tampered)
    other = read_session(SECRET, open_session(SECRET, "u1"))
    assert other is not None


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "",
        "garbage",
        issue_token(SECRET, "u1", ADMIN_AUDIENCE),  # an API token is not a console session
        open_session("another-secret-of-at-least-32-characters", "u1"),
        issue_token(SECRET, "u1", "offsync-console", ttl_seconds=60, now=time.time() - 3600),  # expired
        "x" * 5000,
    ],
    ids=["missing", "empty", "garbage", "api-token", "other-secret", "expired", "huge"],
)
def test_anything_but_a_valid_session_means_signed_out(cookie: str | None) -> None:
    assert read_session(SECRET, cookie) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "/console/"),
        ("/console/profiles/x?validate=1", "/console/profiles/x?validate=1"),
        ("https://evil.example/console/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/v1/profiles", "/console/"),
        ("/console/\\evil", "/console/"),
    ],
    ids=["none", "console-path", "absolute", "scheme-relative", "outside-console", "backslash"],
)
def test_sign_in_only_returns_inside_the_console(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected


COND = {"and": [{"attribute": "ownerid", "operator": "eq-userid"}]}


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"kind": "all"}, {"kind": "all"}),
        ({"kind": "related"}, {"kind": "related"}),
        (
            {"kind": "other", "other_user": "on", "other_business_unit": "on"},
            {"kind": "other", "user": True, "team": False, "business_unit": True},
        ),
        ({"kind": "custom", "condition": json.dumps(COND)}, {"kind": "custom", "condition": COND}),
    ],
    ids=["all", "related", "other", "custom"],
)
def test_filter_fields_become_the_api_filter(form: dict[str, str], expected: dict[str, object]) -> None:
    assert forms.filter_from_form(form) == expected


def test_item_body_reads_relationships_and_interval() -> None:
    body = forms.item_body(
        {"kind": "related", "relationship": ["account|parentcustomerid|self"], "sync_interval_minutes": "30"},
        "contact",
    )
    assert body == {
        "entity": "contact",
        "filter": {"kind": "related"},
        "relationships": [{"entity": "account", "attribute": "parentcustomerid", "side": "self"}],
        "sync_interval_minutes": 30,
    }


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"kind": "custom", "condition": "{not json"}, "condition"),
        ({"kind": "all", "relationship": "broken"}, "relationship"),
        ({"kind": "all", "sync_interval_minutes": "soon"}, "sync_interval_minutes"),
    ],
    ids=["bad-json", "bad-relationship", "bad-interval"],
)
def test_unreadable_fields_name_the_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(forms.FormError) as err:
        forms.item_body(form, "account")
    assert err.value.field == field


def _meta(name: str, attrs: dict[str, dict[str, str]], ownership: str = "user_or_team") -> validation.EntityMeta:
    return validation.EntityMeta(logical_name=name, ownership=ownership, attributes=attrs)


def test_relationships_offered_only_to_entities_in_the_profile() -> None:
    metas = {
        "account": _meta("account", {"primarycontactid": {"type": "lookup", "target": "contact"}}),
        "contact": _meta("contact", {"parentcustomerid": {"type": "lookup", "target": "account"}}),
        "task": _meta("task", {"regardingobjectid": {"type": "lookup", "target": "account"}}),
    }
    offered = forms.relationship_choices("contact", metas, ["account", "contact"])
    assert [o["value"] for o in offered] == ["account|parentcustomerid|self", "account|primarycontactid|related"]
    assert forms.relationship_choices("contact", metas, ["contact"]) == []


def test_the_builder_offers_the_rule_tables_operators() -> None:
    spec = forms.builder_spec(_meta("task", {"subject": {"type": "string"}}))
    assert spec["max_levels"] == validation.MAX_GROUP_LEVELS
    assert set(spec["operators"]) == set(validation.OPERATORS)
    assert spec["attributes"]["ownerid"] == {"type": "lookup", "target": "owner"}


def test_a_filter_reads_as_words() -> None:
    f = {"kind": "custom", "condition": {"or": [{"attribute": "a", "operator": "eq", "value": 1}, COND]}}
    assert forms.describe_filter(f) == "Custom: (a eq 1 or (ownerid eq-userid))"
    assert forms.describe_filter({"kind": "other", "team": True}) == "Other: Download team records"


def test_live_figures_sum_series_across_labels() -> None:
    text = '# HELP x\noffsync_connected_devices 3.0\nofsync_other 1\noffsync_sync_closes_total{code="4001"} 2\n'
    text += 'offsync_sync_closes_total{code="4004"} 5\n'
    got = parse_metrics(text, ("offsync_connected_devices", "offsync_sync_closes_total", "absent"))
    assert got == {"offsync_connected_devices": 3.0, "offsync_sync_closes_total": 7.0, "absent": 0.0}
    only = parse_metrics(text, ('offsync_sync_closes_total{code="4004"}',))
    assert only == {'offsync_sync_closes_total{code="4004"}': 5.0}
