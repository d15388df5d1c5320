"""Decides whether a user may create, read, write or delete a record, from the user's security
roles (privilege depths), business unit tree and teams (pure; semantics in docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class Depth(IntEnum):
    NONE = 0
    USER = 1
    BUSINESS_UNIT = 2
    PARENT_CHILD = 3
    ORGANIZATION = 4

    @classmethod
    def parse(cls, value: Any) -> Depth:
        try:
            return cls[str(value).upper()]
        except KeyError:
            return cls.NONE  # an unknown depth grants nothing


class Operation(StrEnum):
    CREATE = "create"
    READ = "read"
    WRITE = "write"
    DELETE = "delete"


OP_FOR_CHANGE: dict[str, Operation] = {
    "create": Operation.CREATE,
    "update": Operation.WRITE,
    "delete": Operation.DELETE,
}

Privileges = Mapping[str, Mapping[Operation, Depth]]


def combine_privileges(role_privileges: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[Operation, Depth]]:
    """The max depth per entity and operation over several roles' privilege maps."""
    out: dict[str, dict[Operation, Depth]] = {}
    for privs in role_privileges:
        for entity, ops in (privs or {}).items():
            if not isinstance(ops, Mapping):
                continue
            slot = out.setdefault(entity, {})
            for op_name, depth in ops.items():
                try:
                    op = Operation(op_name)
                except ValueError:
                    continue
                slot[op] = max(slot.get(op, Depth.NONE), Depth.parse(depth))
    return out


def bu_subtree(parents: Mapping[str, str | None], root: str) -> frozenset[str]:
    """``root`` and every business unit below it, given each unit's parent."""
    children: dict[str, list[str]] = {}
    for bu, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(bu)
    seen = {root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return frozenset(seen)


@dataclass(frozen=True, slots=True)
class Actor:
    """A user as the permission check sees them."""

    user_id: str
    business_unit_id: str
    team_ids: frozenset[str] = frozenset()
    bu_subtree: frozenset[str] = frozenset()  # the user's BU and every BU below it
    privileges: Privileges = field(default_factory=dict)
    enabled: bool = True
    is_admin: bool = False

    def depth(self, entity: str, op: Operation) -> Depth:
        """The user's depth for ``op`` on ``entity``: the entity's own grant or the ``"*"`` one."""
        if not self.enabled:
            return Depth.NONE
        own = self.privileges.get(entity, {}).get(op, Depth.NONE)
        wildcard = self.privileges.get("*", {}).get(op, Depth.NONE)
        return max(own, wildcard)


@dataclass(frozen=True, slots=True)
class Ownership:
    """Who owns a record: a user or team, and the owning business unit."""

    owner_id: str | None
    owner_type: str | None
    business_unit_id: str | None


def reaches(actor: Actor, depth: Depth, entity_ownership: str, record: Ownership) -> bool:
    """Whether a grant at ``depth`` covers ``record``."""
    if depth is Depth.NONE:
        return False
    if entity_ownership in ("organization", "none") or depth is Depth.ORGANIZATION:
        return True
    # Deeper grants include shallower ones: the user's (and teams') own records are always in
    # reach, even when such a record sits in another business unit.
    if depth is Depth.PARENT_CHILD and record.business_unit_id in actor.bu_subtree:
        return True
    if depth >= Depth.BUSINESS_UNIT and record.business_unit_id == actor.business_unit_id:
        return True
    if record.owner_type == "team":
        return record.owner_id in actor.team_ids
    return record.owner_id == actor.user_id


def may(actor: Actor, op: Operation, entity: str, entity_ownership: str, record: Ownership) -> bool:
    """May ``actor`` perform ``op`` on ``record`` of ``entity`` (for create: the record as it
    would be created, owner and business unit included)?"""
    return reaches(actor, actor.depth(entity, op), entity_ownership, record)


@dataclass(frozen=True, slots=True)
class Scope:
    """The set of records a user may read, as a filter the store turns into SQL:
    ``everything``, or records whose BU is in ``business_units`` or whose owner is in ``owners``."""

    everything: bool = False
    business_units: frozenset[str] = frozenset()
    user_owners: frozenset[str] = frozenset()
    team_owners: frozenset[str] = frozenset()

    @property
    def nothing(self) -> bool:
        return not (self.everything or self.business_units or self.user_owners or self.team_owners)


def read_scope(actor: Actor, entity: str, entity_ownership: str) -> Scope:
    depth = actor.depth(entity, Operation.READ)
    if depth is Depth.NONE:
        return Scope()
    if entity_ownership in ("organization", "none") or depth is Depth.ORGANIZATION:
        return Scope(everything=True)
    bus: frozenset[str] = frozenset()
    if depth is Depth.PARENT_CHILD:
        bus = actor.bu_subtree
    elif depth is Depth.BUSINESS_UNIT:
        bus = frozenset({actor.business_unit_id})
    return Scope(business_units=bus, user_owners=frozenset({actor.user_id}), team_owners=actor.team_ids)


def default_ownership(actor: Actor, entity_ownership: str) -> Ownership:
    """Owner of a record a user creates without naming one: the user (user/team-owned
    entities), the user's business unit (business-owned), nobody (organization/none)."""
    if entity_ownership == "user_or_team":
        return Ownership(actor.user_id, "user", actor.business_unit_id)
    if entity_ownership == "business":
        return Ownership(None, None, actor.business_unit_id)
    return Ownership(None, None, None)
