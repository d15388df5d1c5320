"""The naive reference: each user's record set computed directly from the documented semantics,
in plain Python over all records. Tests compare every bucket plan against it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from offsync_shared.domain.org import Operation, Ownership, may
from publish_service.rules import conditions
from publish_service.rules.buckets import ProfileItem
from publish_service.rules.model import OrgModel, Record


def can_read(org: OrgModel, user_id: str, r: Record) -> bool:
    """The records API's rule (offsync_shared.domain.org), applied record by record."""
    owner = Ownership(r.owner_id, r.owner_type, r.business_unit_id)
    return may(org.actor(user_id), Operation.READ, r.entity, org.entity_ownership(r.entity), owner)


def _params(org: OrgModel, user_id: str) -> dict[str, Any]:
    u = org.users[user_id]
    hier = {user_id} | set(org.below(user_id))
    return {
        "user": user_id,
        "teams": set(org.teams_of(user_id)),
        "hier": hier,
        "hierall": hier | {t for h in hier for t in org.teams_of(h)},
        "bu": u.business_unit_id,
        "lang": u.language,
    }


def in_filter(org: OrgModel, user_id: str, filt: Mapping[str, Any], r: Record) -> bool:
    kind = filt["kind"]
    if kind == "related":
        return False
    if kind == "all":
        return True
    if kind == "custom":
        return conditions.holds(filt["condition"], r, _params(org, user_id))
    flags = filt if kind == "other" else {kind: True}
    return bool(
        (flags.get("user") and r.owner_type == "user" and r.owner_id == user_id)
        or (flags.get("team") and r.owner_type == "team" and r.owner_id in org.teams_of(user_id))
        or (flags.get("business_unit") and r.business_unit_id == org.users[user_id].business_unit_id)
    )


def user_set(
    org: OrgModel, items: Sequence[ProfileItem], user_id: str, records: Iterable[Record]
) -> set[tuple[str, str]]:
    if not org.can_use_offline(user_id):
        return set()
    recs = [r for r in records if not r.deleted]
    actor = org.actor(user_id)
    by_entity = {it.entity: it for it in items}

    def entity_set(entity: str, visited: frozenset[str]) -> list[Record]:
        it = by_entity[entity]
        ownership = org.entity_ownership(entity)
        readable = [
            r
            for r in recs
            if r.entity == entity
            and may(actor, Operation.READ, entity, ownership, Ownership(r.owner_id, r.owner_type, r.business_unit_id))
        ]
        chosen = {r.id for r in readable if in_filter(org, user_id, it.filter, r)}
        for rel in it.relationships:
            other = rel.get("entity")
            if other not in by_entity or other in visited or other == entity:
                continue
            src = entity_set(other, visited | {entity})
            attr = rel["attribute"]
            if rel.get("side", "self") == "self":
                ids = {s.id for s in src}
                chosen |= {
                    r.id for r in readable if isinstance(r.attributes.get(attr), str) and r.attributes[attr] in ids
                }
            else:
                targets = {s.attributes.get(attr) for s in src}
                chosen |= {r.id for r in readable if r.id in targets}
        return [r for r in readable if r.id in chosen]

    return {(r.entity, r.id) for it in items for r in entity_set(it.entity, frozenset())}
