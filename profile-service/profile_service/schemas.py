"""Request bodies of the admin API: strict (unknown fields refused), bounded, and free of values
PostgreSQL would choke on, so bad input is a 422 before it reaches a query."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from offsync_shared.domain.attributes import AttributeTypeName
from offsync_shared.domain.org import DepthName, OwnershipName, PrivilegeName
from profile_service.filter_schema import FilterJson

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("text must not contain NUL characters")
    return v


def _utf8(v: str) -> str:
    """Refuse text with lone surrogates (JSON "\\ud800"): nothing downstream can encode it."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return v


Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# Sign-in secrets and names: any Unicode a person can type, no NUL, encodable.
Secret = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_nul), AfterValidator(_utf8)
]
Username = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(_no_nul), AfterValidator(_utf8)
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=False), AfterValidator(_no_nul)]
LongText = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
LogicalName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
PathId = Annotated[str, Path(pattern=ID_PATTERN, description="Resource id")]
PathName = Annotated[str, Path(pattern=NAME_PATTERN, description="Entity logical name")]

Depth = DepthName
Privilege = PrivilegeName
Ownership = OwnershipName
AttributeType = AttributeTypeName
Language = Annotated[int, Field(ge=0, le=2_147_483_647, description="LCID, e.g. 1033")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BusinessUnitIn(Body):
    id: Id | None = None
    name: Text
    parent_id: Id = Field(description="Parent business unit (the tree has one root, made at bootstrap).")


class BusinessUnitPatch(Body):
    name: Text | None = None
    parent_id: Id | None = None


class TeamIn(Body):
    id: Id | None = None
    name: Text
    business_unit_id: Id
    member_ids: list[Id] = Field(default_factory=list, max_length=1000)
    role_ids: list[Id] = Field(default_factory=list, max_length=100)


class TeamPatch(Body):
    name: Text | None = None
    business_unit_id: Id | None = None


class UserIn(Body):
    id: Id | None = None
    name: Text
    email: Text | None = None
    business_unit_id: Id
    manager_id: Id | None = None
    language: Language | None = None
    enabled: bool = True
    team_ids: list[Id] = Field(default_factory=list, max_length=100)
    role_ids: list[Id] = Field(default_factory=list, max_length=100)
    username: Username | None = Field(
        None, description="Sign-in name, unique regardless of case (default: the user id)."
    )
    password: Secret | None = Field(
        None, description="Initial password (stored as an argon2id hash, never returned); see docs/identity.md."
    )


class UserPatch(Body):
    name: Text | None = None
    email: Text | None = None
    business_unit_id: Id | None = None
    manager_id: Id | None = Field(None, description="null clears the manager")
    language: Language | None = None
    enabled: bool | None = None
    username: Username | None = None


class RoleIn(Body):
    id: Id | None = None
    name: Text
    is_admin: bool = False
    read_offline_profile: bool = False
    privileges: dict[str, dict[Privilege, Depth]] = Field(
        default_factory=dict, description='{"<entity>"|"*": {"create"|"read"|"write"|"delete": depth}}', max_length=500
    )


class RolePatch(Body):
    name: Text | None = None
    is_admin: bool | None = None
    read_offline_profile: bool | None = None
    privileges: dict[str, dict[Privilege, Depth]] | None = Field(None, max_length=500)


class AttributeIn(Body):
    type: AttributeType
    required: bool = False
    target: LogicalName | None = Field(
        None, description="Lookup target entity (lookups only); user, team, businessunit allowed."
    )
    max_length: Annotated[int, Field(ge=1, le=1_000_000)] | None = None


class EntityIn(Body):
    logical_name: LogicalName
    display_name: Text
    ownership: Ownership
    offline_capable: bool = True
    offline_enabled: bool = False
    attributes: dict[Annotated[str, StringConstraints(pattern=NAME_PATTERN)], AttributeIn] = Field(
        default_factory=dict, max_length=500
    )
    conflict_policy: Literal["client_wins", "server_wins", "field_merge"] | None = None


class EntityPatch(Body):
    display_name: Text | None = None
    offline_enabled: bool | None = None
    attributes: dict[Annotated[str, StringConstraints(pattern=NAME_PATTERN)], AttributeIn] | None = Field(
        None, description="Attributes to add (existing attributes cannot change type).", max_length=500
    )
    conflict_policy: Literal["client_wins", "server_wins", "field_merge"] | None = None


class OrgSettingsPatch(Body):
    conflict_detection: bool | None = Field(None, description="false: client wins; true: server wins")
    max_records_per_user: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None


class TokenIn(Body):
    user_id: Id
    audience: Literal["device", "admin"]
    device_id: Id | None = None
    ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = 3600


class ProfileIn(Body):
    id: Id | None = None
    name: Text
    description: LongText = ""


class ProfilePatch(Body):
    name: Text | None = None
    description: LongText | None = None


class ItemIn(Body):
    entity: LogicalName
    filter: FilterJson = Field(description="Download filter: related, all, other or custom (docs/admin-api.md).")
    relationships: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    sync_interval_minutes: Annotated[int, Field(ge=5, le=1440)] = 5


class ItemPatch(Body):
    filter: FilterJson | None = Field(None, description="Download filter: related, all, other or custom.")
    relationships: list[dict[str, Any]] | None = Field(None, max_length=100)
    sync_interval_minutes: Annotated[int, Field(ge=5, le=1440)] | None = None


class UsersIn(Body):
    user_ids: list[Id] = Field(min_length=1, max_length=1000)


class CloneIn(Body):
    name: Text
    description: LongText | None = None


class AppModuleIn(Body):
    id: Id | None = None
    name: Text
    offline_enabled: bool = False


class AppModulePatch(Body):
    name: Text | None = None
    offline_enabled: bool | None = None


class SolutionIn(Body):
    format: Literal["offsync-solution"] = "offsync-solution"
    version: Literal[1] = 1
    entities: list[dict[str, Any]] = Field(default_factory=list, max_length=500)
    profiles: list[dict[str, Any]] = Field(default_factory=list, max_length=200)
