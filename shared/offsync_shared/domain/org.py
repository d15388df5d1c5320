"""Knows the organization's record-access rule: privilege depths and their order, ownership kinds,
the business-unit subtree, and whether a user's grant reaches a record (pure; no I/O).

Every service reads this one rule: the records API (conflict-service) to allow a read or a write,
publish-service to decide which buckets a user's device gets, profile-service's estimates, and the
reference evaluators of the tests. The semantics are written down in docs/architecture.md
("Record access").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Literal, get_args


class Depth(IntEnum):
    """How far a privilege reaches, shallowest first; a deeper grant covers a shallower one."""

    NONE = 0
    USER = 1
    BUSINESS_UNIT = 2
    PARENT_CHILD = 3
    ORGANIZATION = 4

    @property
    def wire(self) -> str:
        """The name roles and events spell it with (``"business_unit"``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: object) -> Depth:
        """A depth from its wire name; an unknown one grants nothing."""
        try:
            return cls[str(value).upper()]
        except KeyError:
            return cls.NONE


# The wire spellings, for schemas (pydantic) that validate them; the enums above are their meaning.
DepthName = Literal["none", "user", "business_unit", "parent_child", "organization"]
OwnershipName = Literal["user_or_team", "organization", "business", "none"]
PrivilegeName = Literal["create", "read", "write", "delete"]

DEPTHS: tuple[str, ...] = tuple(d.wire for d in Depth)
"""Depth names in order, shallowest first."""
assert DEPTHS == get_args(DepthName)


class EntityOwnership(StrEnum):
    """Who can own an entity's records (the seed's ownership types)."""

    USER_OR_TEAM = "user_or_team"
    ORGANIZATION = "organization"
    BUSINESS = "business"
    NONE = "none"


OWNERSHIPS: tuple[str, ...] = tuple(o.value for o in EntityOwnership)
assert OWNERSHIPS == get_args(OwnershipName)

# Entities whose records nobody owns: any depth above none reaches every record.
UNOWNED = frozenset({EntityOwnership.ORGANIZATION.value, EntityOwnership.NONE.value})

OwnerType = Literal["user", "team"]
OWNER_TYPES: tuple[OwnerType, ...] = ("user", "team")


class Operation(StrEnum):
    CREATE = "create"
    READ = "read"
    WRITE = "write"
    DELETE = "delete"


assert tuple(o.value for o in Operation) == get_args(PrivilegeName)

OP_FOR_CHANGE: Mapping[str, Operation] = {
    "create": Operation.CREATE,
    "update": Operation.WRITE,
    "delete": Operation.DELETE,
}

Privileges = Mapping[str, Mapping[Operation, Depth]]


def combine_privileges(role_privileges: Iterable[Mapping[str, object]]) -> dict[str, dict[Operation, Depth]]:
    """The max depth per entity and operation over several roles' privilege maps
    (``{"<entity>"|"*": {"create"|"read"|"write"|"delete": depth}}``); malformed parts grant nothing."""
    out: dict[str, dict[Operation, Depth]] = {}
    for privs in role_privileges:
        if not isinstance(privs, Mapping):
            continue
        for entity, ops in privs.items():
            if not isinstance(ops, Mapping):
                continue
            slot = out.setdefault(str(entity), {})
            for op_name, depth in ops.items():
                try:
                    op = Operation(op_name)
                except ValueError:
                    continue
                slot[op] = max(slot.get(op, Depth.NONE), Depth.parse(depth))
    return out


def bu_subtree(parents: Mapping[str, str | None], root: str) -> frozenset[str]:
    """``root`` and every business unit below it, given each unit's parent (cycles terminate)."""
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


def below_in_hierarchy(managers: Mapping[str, str | None], user_id: str) -> frozenset[str]:
    """Users below ``user_id`` in the manager hierarchy, any depth, the user excluded
    (``managers``: each user's manager; cycles terminate)."""
    reports: dict[str, list[str]] = {}
    for uid, manager in managers.items():
        if manager:
            reports.setdefault(manager, []).append(uid)
    seen: set[str] = set()
    stack = list(reports.get(user_id, ()))
    while stack:
        uid = stack.pop()
        if uid in seen or uid == user_id:
            continue
        seen.add(uid)
        stack.extend(reports.get(uid, ()))
    return frozenset(seen)


@dataclass(frozen=True, slots=True)
class Actor:
    """A user as the access rule sees them."""

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


def owned_by_actor(actor: Actor, record: Ownership) -> bool:
    """The record is owned by the user or by one of the user's teams."""
    if record.owner_type == "team":
        return record.owner_id in actor.team_ids
    return record.owner_type == "user" and record.owner_id == actor.user_id


def reaches(actor: Actor, depth: Depth, entity_ownership: str, record: Ownership) -> bool:
    """Whether a grant at ``depth`` covers ``record``: the one record-access rule.

    none → nothing; organization, or an entity nobody owns → every record; otherwise the records
    owned by the user or one of the user's teams (wherever they sit), plus at business_unit the
    records of the user's business unit, at parent_child those of its subtree."""
    if depth is Depth.NONE:
        return False
    if depth is Depth.ORGANIZATION or entity_ownership in UNOWNED:
        return True
    if depth is Depth.PARENT_CHILD and record.business_unit_id in actor.bu_subtree:
        return True
    if depth is Depth.BUSINESS_UNIT and record.business_unit_id == actor.business_unit_id:
        return True
    return owned_by_actor(actor, record)


def may(actor: Actor, op: Operation, entity: str, entity_ownership: str, record: Ownership) -> bool:
    """May ``actor`` perform ``op`` on ``record`` of ``entity`` (for create: the record as it
    would be created, owner and business unit included)?"""
    return reaches(actor, actor.depth(entity, op), entity_ownership, record)


@dataclass(frozen=True, slots=True)
class Scope:
    """The records a grant reaches, as a union the stores turn into SQL or bucket atoms:
    ``everything``, or the records whose business unit is in ``business_units`` or whose owner is
    one of ``user_owners`` (owner_type user) / ``team_owners`` (owner_type team)."""

    everything: bool = False
    business_units: frozenset[str] = frozenset()
    user_owners: frozenset[str] = frozenset()
    team_owners: frozenset[str] = frozenset()

    @property
    def nothing(self) -> bool:
        return not (self.everything or self.business_units or self.user_owners or self.team_owners)

    def holds(self, record: Ownership) -> bool:
        """``record`` is in the scope (equal to ``reaches`` at the depth the scope was made for)."""
        if self.everything:
            return True
        if record.business_unit_id is not None and record.business_unit_id in self.business_units:
            return True
        if record.owner_type == "user":
            return record.owner_id in self.user_owners
        return record.owner_type == "team" and record.owner_id in self.team_owners


def scope_at(actor: Actor, depth: Depth, entity_ownership: str) -> Scope:
    """The records a grant at ``depth`` reaches, as a :class:`Scope` (same rule as ``reaches``)."""
    if depth is Depth.NONE:
        return Scope()
    if depth is Depth.ORGANIZATION or entity_ownership in UNOWNED:
        return Scope(everything=True)
    bus: frozenset[str] = frozenset()
    if depth is Depth.PARENT_CHILD:
        bus = actor.bu_subtree | {actor.business_unit_id}
    elif depth is Depth.BUSINESS_UNIT:
        bus = frozenset({actor.business_unit_id})
    return Scope(business_units=bus, user_owners=frozenset({actor.user_id}), team_owners=actor.team_ids)


def read_scope(actor: Actor, entity: str, entity_ownership: str) -> Scope:
    """The records ``actor`` may read of ``entity``."""
    return scope_at(actor, actor.depth(entity, Operation.READ), entity_ownership)


def default_ownership(actor: Actor, entity_ownership: str) -> Ownership:
    """Owner of a record a user creates without naming one: the user (user/team-owned
    entities), the user's business unit (business-owned), nobody (organization/none)."""
    if entity_ownership == EntityOwnership.USER_OR_TEAM:
        return Ownership(actor.user_id, "user", actor.business_unit_id)
    if entity_ownership == EntityOwnership.BUSINESS:
        return Ownership(None, None, actor.business_unit_id)
    return Ownership(None, None, None)


@dataclass(frozen=True, slots=True)
class OwnerRequest:
    """The owner a create names (records API, import); any part may be left out."""

    owner_id: str | None = None
    owner_type: str = "user"
    business_unit_id: str | None = None


class OwnershipRefused(ValueError):
    """A requested owner that cannot own the record; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def ownership_for_create(
    actor: Actor,
    entity_ownership: str,
    request: OwnerRequest | None,
    owner_units: Mapping[tuple[str, str], str],
    business_units: Collection[str],
) -> Ownership:
    """The ownership a new record gets: the owning business unit is the owner's (Dataverse), so a
    ``business_unit_id`` that differs from the owner's is refused, never silently dropped.

    ``owner_units``: (owner_type, owner_id) → business unit of each named owner that exists;
    ``business_units``: the named business units that exist. Raises OwnershipRefused."""
    if request is None or (request.owner_id is None and request.business_unit_id is None):
        return default_ownership(actor, entity_ownership)
    if entity_ownership in UNOWNED:
        raise OwnershipRefused(
            "owner_id" if request.owner_id is not None else "business_unit_id",
            f"records of an entity with {entity_ownership} ownership have no owner or business unit",
        )
    if entity_ownership == EntityOwnership.BUSINESS:
        if request.owner_id is not None:
            raise OwnershipRefused(
                "owner_id", "business-owned records are owned by a business unit: give business_unit_id"
            )
        bu = request.business_unit_id
        if bu not in business_units:
            raise OwnershipRefused("business_unit_id", f"no business unit {bu}")
        return Ownership(None, None, bu)
    if request.owner_id is None:
        owner_id, owner_type, unit = actor.user_id, "user", actor.business_unit_id
    else:
        if request.owner_type not in OWNER_TYPES:
            raise OwnershipRefused("owner_type", "owner_type must be user or team")
        owner_id, owner_type = request.owner_id, request.owner_type
        found = owner_units.get((owner_type, owner_id))
        if found is None:
            raise OwnershipRefused("owner_id", f"no {owner_type} {owner_id}")
        unit = found
    if request.business_unit_id is not None and request.business_unit_id != unit:
        raise OwnershipRefused(
            "business_unit_id",
            f"a record's business unit is its owner's ({unit}); business_unit_id {request.business_unit_id} differs",
        )
    return Ownership(owner_id, owner_type, unit)
