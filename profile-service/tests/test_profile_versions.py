"""Diff of two published profile snapshots."""

from profile_service.versions import diff


def test_diff_reports_items_settings_and_users() -> None:
    a = {
        "name": "P",
        "items": [
            {"entity": "account", "filter": {"kind": "all"}, "relationships": [], "sync_interval_minutes": 5},
            {"entity": "task", "filter": {"kind": "all"}},
        ],
        "user_ids": ["u1", "u2"],
    }
    b = {
        "name": "P2",
        "items": [
            {"entity": "account", "filter": {"kind": "related"}, "relationships": [], "sync_interval_minutes": 60},
            {"entity": "contact", "filter": {"kind": "all"}},
        ],
        "user_ids": ["u2", "u3"],
    }
    d = diff(a, b)
    assert d["items_added"] == ["contact"] and d["items_removed"] == ["task"]
    assert d["items_changed"] == [
        {
            "entity": "account",
            "changes": {
                "filter": {"from": {"kind": "all"}, "to": {"kind": "related"}},
                "sync_interval_minutes": {"from": 5, "to": 60},
            },
        }
    ]
    assert (d["users_added"], d["users_removed"]) == (["u3"], ["u1"])
    assert d["name_changed"] == {"from": "P", "to": "P2"}
    assert diff(a, a) == {
        "items_added": [],
        "items_removed": [],
        "items_changed": [],
        "users_added": [],
        "users_removed": [],
    }
