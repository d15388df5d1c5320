"""The org model and record shape the rules evaluate: users, teams, BU tree, roles, records.
The access rule itself lives in offsync_shared.domain.org; ``OrgModel.actor`` feeds it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from offsync_shared.domain.org import DEPTHS, Actor, Operation, bu_subtree, combine_privileges

__all__ = ["DEPTHS", "OrgModel", "Record", "Role", "Team", "User"]


@dataclass(frozen=True)
class Record:
    """The state of one record as the rules see it (a row of data.records / sync.record_index)."""

    entity: str
    id: str
    version: int
    owner_id: str | None = None
    owner_type: str | None = None
    business_unit_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False
    created_at: datetime | None = None
    modified_at: datetime | None = None


@dataclass(frozen=True)
class Role:
    id: str
    privileges: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    read_offline_profile: bool = False


@dataclass(frozen=True)
class User:
    id: str
    business_unit_id: str
    manager_id: str | None = None
    language: int | None = None
    enabled: bool = True
    role_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Team:
    id: str
    business_unit_id: str
    member_ids: tuple[str, ...] = ()
    role_ids: tuple[str, ...] = ()


@dataclass
class OrgModel:
    """The current organization, loaded from the admin schema (or built by tests)."""

    users: dict[str, User] = field(default_factory=dict)
    teams: dict[str, Team] = field(default_factory=dict)
    bu_parent: dict[str, str | None] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    ownership: dict[str, str] = field(default_factory=dict)  # entity -> ownership type
    _teams_of: dict[str, tuple[str, ...]] | None = None
    _reports: dict[str, list[str]] | None = None

    def teams_of(self, user_id: str) -> tuple[str, ...]:
        if self._teams_of is None:
            acc: dict[str, list[str]] = {}
            for t in self.teams.values():
                for m in t.member_ids:
                    acc.setdefault(m, []).append(t.id)
            self._teams_of = {u: tuple(sorted(ts)) for u, ts in acc.items()}
        return self._teams_of.get(user_id, ())

    def below(self, user_id: str) -> tuple[str, ...]:
        """Users below ``user_id`` in the manager hierarchy, any depth (cycles terminate)."""
        if self._reports is None:
            rep: dict[str, list[str]] = {}
            for u in self.users.values():
                if u.manager_id:
                    rep.setdefault(u.manager_id, []).append(u.id)
            self._reports = rep
        seen: set[str] = set()
        stack = list(self._reports.get(user_id, ()))
        while stack:
            uid = stack.pop()
            if uid in seen or uid == user_id:
                continue
            seen.add(uid)
            stack.extend(self._reports.get(uid, ()))
        return tuple(sorted(seen))

    def subtree(self, bu_id: str) -> tuple[str, ...]:
        """``bu_id`` and every BU below it."""
        return tuple(sorted(bu_subtree(self.bu_parent, bu_id)))

    def _roles_of(self, user_id: str) -> Iterable[Role]:
        u = self.users[user_id]
        ids = set(u.role_ids)
        for t in self.teams_of(user_id):
            ids.update(self.teams[t].role_ids)
        return [self.roles[r] for r in sorted(ids) if r in self.roles]

    def can_use_offline(self, user_id: str) -> bool:
        u = self.users.get(user_id)
        return bool(u and u.enabled and any(r.read_offline_profile for r in self._roles_of(user_id)))

    def actor(self, user_id: str) -> Actor:
        """The user as the access rule (offsync_shared.domain.org) sees them."""
        u = self.users[user_id]
        return Actor(
            user_id=user_id,
            business_unit_id=u.business_unit_id,
            team_ids=frozenset(self.teams_of(user_id)),
            bu_subtree=bu_subtree(self.bu_parent, u.business_unit_id),
            privileges=combine_privileges(r.privileges for r in self._roles_of(user_id)),
            enabled=u.enabled,
        )

    def read_depth(self, user_id: str, entity: str) -> str:
        """Max read depth over the roles of the user and of the user's teams."""
        return self.actor(user_id).depth(entity, Operation.READ).wire

    def entity_ownership(self, entity: str) -> str:
        return self.ownership.get(entity, "user_or_team")
