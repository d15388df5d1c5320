"""Payloads of ``offsync.admin.v1`` (key: org id). Each event carries the full new state of the
thing that changed, so consumers never need the producer's tables to apply it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from offsync_shared.domain.org import DepthName as Depth
from offsync_shared.domain.org import OwnershipName as Ownership
from offsync_shared.events import Event, register

# Types once on this topic and no longer produced; consumers skip them (events of older
# producers may still be on the topic). ``org.settings_changed`` had no consumer: conflict-service
# reads ``admin.org_settings`` in the transaction that applies a change, and that shared-table
# read is the contract (docs/architecture.md).
RETIRED_TYPES = ("org.settings_changed",)


@register
class BusinessUnitChanged(Event):
    TYPE = "business_unit.changed"
    id: str = Field(description="Business unit id.")
    parent_id: str | None = Field(description="Parent business unit; None for the root.")
    name: str = ""
    deleted: bool = False


@register
class TeamChanged(Event):
    TYPE = "team.changed"
    id: str = Field(description="Team id.")
    business_unit_id: str = Field(description="Owning business unit.")
    member_ids: list[str] = Field(default_factory=list, description="User ids of the members.")
    role_ids: list[str] = Field(default_factory=list, description="Security roles assigned to the team.")
    deleted: bool = False


@register
class UserChanged(Event):
    TYPE = "user.changed"
    id: str = Field(description="User id.")
    business_unit_id: str
    team_ids: list[str] = Field(default_factory=list)
    manager_id: str | None = None
    language: int | None = Field(None, description="Language code (LCID), for eq-userlanguage.")
    enabled: bool = True
    role_ids: list[str] = Field(default_factory=list, description="Roles assigned directly to the user.")
    deleted: bool = False


@register
class RoleChanged(Event):
    TYPE = "role.changed"
    id: str
    name: str
    # entity logical name -> privilege (create/read/write/delete) -> depth
    privileges: dict[str, dict[str, Depth]] = Field(default_factory=dict)
    read_offline_profile: bool = Field(False, description="Grants read on mobile offline profiles.")
    is_admin: bool = False
    deleted: bool = False


@register
class EntityChanged(Event):
    TYPE = "entity.changed"
    logical_name: str
    ownership: Ownership
    offline_enabled: bool
    # attribute name -> {"type": ..., "required": bool, "target": lookup target entity or None}
    attributes: dict[str, dict[str, Any]] = Field(default_factory=dict)


class ProfileItemSnapshot(Event):
    entity: str = Field(description="Entity logical name.")
    filter: dict[str, Any] = Field(
        description="Download filter (docs/architecture.md): {'kind': related|all|other|custom, ...}."
    )
    relationships: list[dict[str, Any]] = Field(
        default_factory=list, description="[{'entity','attribute','side'}] lookups whose related records come along."
    )
    sync_interval_minutes: int = 5


@register
class ProfilePublished(Event):
    TYPE = "profile.published"
    profile_id: str
    version: int = Field(description="Published version number, 1, 2, ... per profile.")
    name: str = ""
    items: list[ProfileItemSnapshot]
    user_ids: list[str] = Field(description="Users of this published version.")


@register
class ProfileDeleted(Event):
    TYPE = "profile.deleted"
    profile_id: str
