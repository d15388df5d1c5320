"""Types for query and path parameters that PostgreSQL must be able to take as they are:
refused with a 422 at the edge instead of failing in the database driver with a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

PG_BIGINT_MAX = 2**63 - 1


def _instant_in_range(v: datetime) -> datetime:
    """A moment that exists in UTC (``0001-01-01T00:00:00+14:00`` is in year 0 there)."""
    try:
        (v if v.tzinfo is not None else v.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError("instant out of range (years 1-9999 in UTC)") from None
    return v


Instant = Annotated[datetime, AfterValidator(_instant_in_range)]
# A bigint id cursor: "after" in a paged listing.
IdCursor = Annotated[int, Field(ge=0, le=PG_BIGINT_MAX)]
