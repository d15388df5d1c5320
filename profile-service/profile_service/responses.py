"""Response bodies of the admin API: what each route answers, so the OpenAPI document shows every
shape (routes hand FastAPI the store's rows; these models check and document them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from offsync_shared.domain.org import DepthName, OwnershipName, PrivilegeName
from profile_service.filter_schema import FilterJson


class BusinessUnitOut(BaseModel):
    id: str
    name: str
    parent_id: str | None = Field(description="null for the root unit only.")
    created_at: datetime


class TeamOut(BaseModel):
    id: str
    name: str
    business_unit_id: str
    created_at: datetime
    member_ids: list[str] = Field(description="The team's members (user ids), sorted.")
    role_ids: list[str] = Field(description="Security roles the team holds (its members hold them too).")


class UserOut(BaseModel):
    id: str
    username: str | None = Field(description="Sign-in name, unique regardless of case.")
    name: str
    email: str | None
    business_unit_id: str
    manager_id: str | None
    language: int | None = Field(description="LCID, e.g. 1033.")
    enabled: bool
    created_at: datetime
    team_ids: list[str]
    role_ids: list[str] = Field(description="Roles held directly (not through a team).")
    profile_id: str | None = Field(description="The mobile offline profile the user is in (a user has one).")


class RoleOut(BaseModel):
    id: str
    name: str
    is_admin: bool = Field(description="Holders may call the admin API.")
    read_offline_profile: bool = Field(description="Holders may sync a mobile offline profile.")
    privileges: dict[str, dict[PrivilegeName, DepthName]] = Field(
        description='{"<entity>"|"*": {"create"|"read"|"write"|"delete": depth}}'
    )


class AttributeOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(description="string, int, decimal, bool, datetime, lookup or choice.")
    required: bool = False
    target: str | None = Field(None, description="Lookup target entity (lookups only).")
    max_length: int | None = None


class EntityOut(BaseModel):
    logical_name: str
    display_name: str
    ownership: OwnershipName
    offline_capable: bool
    offline_enabled: bool
    attributes: dict[str, AttributeOut]
    conflict_policy: Literal["client_wins", "server_wins", "field_merge"] | None = Field(
        description="This entity's conflict policy; null follows the org's conflict detection."
    )


class OrgSettingsOut(BaseModel):
    org_id: str
    conflict_detection: bool = Field(description="false: client wins; true: server wins.")
    max_records_per_user: int
    row_version: int
    updated_at: datetime


class ItemOut(BaseModel):
    entity: str
    filter: FilterJson
    relationships: list[dict[str, Any]] = Field(
        description='Profile item relationships: {"entity", "attribute", "side"?} (docs/admin-api.md).'
    )
    sync_interval_minutes: int


class _ProfileHead(BaseModel):
    """What a profile's list row and its full answer share."""

    id: str
    name: str
    description: str
    row_version: int = Field(description="The ETag's value: bumped by every change.")
    has_unpublished_changes: bool
    published_version: int | None
    created_at: datetime
    updated_at: datetime


class ProfileSummaryOut(_ProfileHead):
    item_count: int
    user_count: int


class ProfileOut(_ProfileHead):
    items: list[ItemOut]
    user_ids: list[str]
    app_module_ids: list[str]


class ProblemOut(BaseModel):
    """One problem; the optional fields are present only when they apply."""

    model_config = ConfigDict(extra="allow")
    code: str = Field(description="Stable problem code (docs/errors.md).")
    message: str
    severity: Literal["error", "warning"] | None = None
    field: str | None = None
    entity: str | None = None
    user_id: str | None = None
    details: dict[str, Any] | None = None


class ItemEstimateOut(BaseModel):
    entity: str
    records: int
    bytes: int
    exact: bool


class EstimateOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    user_id: str
    records: int
    items: list[ItemEstimateOut]


class ValidationReportOut(BaseModel):
    valid: bool = Field(description="No problem of severity error.")
    problems: list[ProblemOut]
    max_records_per_user: int
    estimates: list[EstimateOut] | None = Field(
        description="Records each user would carry; null while the profile has errors or no records exist."
    )


class PublishResultOut(BaseModel):
    version: int
    validation: ValidationReportOut


class PublishedProfileOut(ProfileOut):
    published: PublishResultOut


class VersionOut(BaseModel):
    version: int
    published_at: datetime
    published_by: str | None


class VersionSnapshotOut(BaseModel):
    profile_id: str
    version: int
    snapshot: dict[str, Any] = Field(description="name, description, items and user_ids as published.")


class ChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: Any = Field(alias="from")
    to: Any


class ItemChangeOut(BaseModel):
    entity: str
    changes: dict[str, ChangeOut] = Field(description="filter, relationships, sync_interval_minutes: from → to.")


class VersionDiffOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    to: int
    items_added: list[str]
    items_removed: list[str]
    items_changed: list[ItemChangeOut]
    users_added: list[str]
    users_removed: list[str]
    name_changed: ChangeOut | None = Field(None, description="Present only when the name changed.")
    description_changed: ChangeOut | None = Field(None, description="Present only when the description changed.")


class AppModuleOut(BaseModel):
    id: str
    name: str
    offline_enabled: bool
    profile_ids: list[str] = Field(description="Mobile offline profiles attached, sorted.")


class SolutionProfileOut(BaseModel):
    name: str
    description: str
    items: list[ItemOut]


class SolutionOut(BaseModel):
    format: Literal["offsync-solution"]
    version: Literal[1]
    entities: list[dict[str, Any]] = Field(description="Entity metadata as POST /v1/entities takes it.")
    profiles: list[SolutionProfileOut]


class ImportedProfileOut(BaseModel):
    id: str
    name: str
    created: bool = Field(description="false: a profile of that name existed and its draft was replaced.")


class ImportResultOut(BaseModel):
    entities: list[str] = Field(description="Entities created or updated.")
    profiles: list[ImportedProfileOut] = Field(description="Imported profiles: drafts to publish.")


class TokenOut(BaseModel):
    token: str
    audience: str
    user_id: str
    device_id: str | None
    expires_at: int = Field(description="Unix time (seconds).")
