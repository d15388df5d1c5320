"""What a device learns about an entity of its profile (the `metadata` frame): its attributes as
admin.entities describes them, and the attribute that names a record in lists (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Attribute names that, when present, are what a person calls a record of the entity.
_NAMING = ("name", "fullname", "subject", "title", "lastname")


def primary_attribute(attributes: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The attribute a list shows for each record: a conventional name attribute if there is one,
    else the first required string attribute, else the first string attribute."""
    strings = sorted(n for n, spec in attributes.items() if spec.get("type", "string") == "string")
    for n in _NAMING:
        if n in strings:
            return n
    required = [n for n in strings if attributes[n].get("required")]
    candidates = required or strings
    return candidates[0] if candidates else None


def describe_entity(logical_name: str, display_name: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of the metadata frame. Attribute specs pass through whole, so a key the device
    does not know yet (a newer vocabulary) reaches it instead of being lost here."""
    attrs = {n: dict(spec) for n, spec in sorted(attributes.items()) if isinstance(spec, Mapping)}
    return {
        "name": logical_name,
        "display_name": display_name,
        "primary_attribute": primary_attribute(attrs),
        "attributes": attrs,
    }
