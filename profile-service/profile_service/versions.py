"""What changed between two published snapshots of a profile (items, their settings, users)."""

from __future__ import annotations

from typing import Any


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    old_items = {i["entity"]: i for i in old.get("items", [])}
    new_items = {i["entity"]: i for i in new.get("items", [])}
    changed = []
    for ent in sorted(old_items.keys() & new_items.keys()):
        a, b = old_items[ent], new_items[ent]
        fields = {
            k: {"from": a.get(k), "to": b.get(k)}
            for k in ("filter", "relationships", "sync_interval_minutes")
            if a.get(k) != b.get(k)
        }
        if fields:
            changed.append({"entity": ent, "changes": fields})
    old_users, new_users = set(old.get("user_ids", [])), set(new.get("user_ids", []))
    out: dict[str, Any] = {
        "items_added": sorted(new_items.keys() - old_items.keys()),
        "items_removed": sorted(old_items.keys() - new_items.keys()),
        "items_changed": changed,
        "users_added": sorted(new_users - old_users),
        "users_removed": sorted(old_users - new_users),
    }
    for k in ("name", "description"):
        if old.get(k) != new.get(k):
            out[f"{k}_changed"] = {"from": old.get(k), "to": new.get(k)}
    return out
