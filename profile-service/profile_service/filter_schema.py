"""The download filter's shape as OpenAPI shows it: the kinds (and the shorthands for other), and a custom filter's
conditions and and/or groups (three levels at most) with the seed's operators as an enum.

Requests are still checked by ``validation.check_filter``, which knows the entity's attributes and
answers the stable problem codes; these models only document what it accepts (a test proves that
every filter it accepts fits them)."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, TypeAdapter
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from offsync_shared.domain.operators import MAX_CONDITIONS, OPERATORS

if TYPE_CHECKING:
    Operator = str
else:
    # The enum's values are the operator table's keys: one home for the operator names.
    Operator = Enum("Operator", {name: name for name in OPERATORS}, type=str)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Condition(_Strict):
    """One comparison of an attribute (docs/admin-api.md lists which operator fits which type)."""

    attribute: str = Field(description="An attribute of the entity (or ownerid, owningbusinessunit …).")
    operator: Operator
    value: Any = Field(
        None,
        description="A value of the attribute's type; a non-empty list for in / not-in; a string for the "
        "like and begins/ends-with operators; absent for null, not-null and the user-context operators.",
    )


class AndLevel3(_Strict):
    and_: list[Condition] = Field(alias="and", min_length=1, max_length=MAX_CONDITIONS)


class OrLevel3(_Strict):
    or_: list[Condition] = Field(alias="or", min_length=1, max_length=MAX_CONDITIONS)


class AndLevel2(_Strict):
    and_: list[Condition | AndLevel3 | OrLevel3] = Field(alias="and", min_length=1, max_length=MAX_CONDITIONS)


class OrLevel2(_Strict):
    or_: list[Condition | AndLevel3 | OrLevel3] = Field(alias="or", min_length=1, max_length=MAX_CONDITIONS)


class AndGroup(_Strict):
    """Every member holds (groups nest three levels at most)."""

    and_: list[Condition | AndLevel2 | OrLevel2] = Field(alias="and", min_length=1, max_length=MAX_CONDITIONS)


class OrGroup(_Strict):
    """At least one member holds (groups nest three levels at most)."""

    or_: list[Condition | AndLevel2 | OrLevel2] = Field(alias="or", min_length=1, max_length=MAX_CONDITIONS)


class RelatedFilter(_Strict):
    """Only records related to other records the user carries."""

    kind: Literal["related"]


class AllFilter(_Strict):
    """Every record of the entity."""

    kind: Literal["all"]


class OtherFilter(_Strict):
    """The user's own records, their teams' and/or their business unit's (at least one chosen)."""

    kind: Literal["other"]
    user: bool = False
    team: bool = False
    business_unit: bool = False


class ShorthandFilter(_Strict):
    """Shorthand for kind other with one choice; stored (and answered) as kind other."""

    kind: Literal["user", "team", "business_unit"]


class CustomFilter(_Strict):
    """Records matching a condition or an and/or group of conditions."""

    kind: Literal["custom"]
    condition: Condition | AndGroup | OrGroup


Filter = Annotated[
    RelatedFilter | AllFilter | OtherFilter | ShorthandFilter | CustomFilter, Field(discriminator="kind")
]
FILTER = TypeAdapter(Filter)


class _DocumentedFilter:
    """A JSON object passed through as it is (``validation`` checks it), shown as :data:`Filter`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(FILTER.core_schema)


FilterJson = Annotated[dict[str, Any], _DocumentedFilter]
