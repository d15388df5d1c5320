"""What a signed-in device may read from the admin API: the attribute metadata of the entities
enabled for offline use, so a device can type what a person types (``name=value``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from offsync_shared.auth import DEVICE_AUDIENCE, verify_token
from offsync_shared.errors import Forbidden, Unauthenticated
from profile_service import entities, identity
from profile_service.context import PoolDep, SettingsDep

router = APIRouter(prefix="/v1", tags=["devices"])
_bearer = HTTPBearer(auto_error=False, description="A device access token (POST /v1/auth/login)")


class DeviceEntityOut(BaseModel):
    logical_name: str
    display_name: str
    attributes: dict[str, dict[str, Any]] = Field(
        description='{"<name>": {"type": string|int|decimal|bool|datetime|lookup|choice, "required", ...}}'
    )


@router.get(
    "/device/entities",
    summary="Entity metadata for a device",
    description=(
        "Needs a device access token of an enabled user. Lists the entities enabled for offline use with "
        "their attributes and types (no profile or record data)."
    ),
    response_model=list[DeviceEntityOut],
)
async def device_entities(
    pool: PoolDep, settings: SettingsDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> list[DeviceEntityOut]:
    if creds is None or not creds.credentials:
        raise Unauthenticated("missing bearer token")
    principal = verify_token(settings.jwt_secret, creds.credentials, DEVICE_AUDIENCE, issuer=settings.jwt_issuer)
    async with pool.acquire() as conn:
        who = await identity.load(conn, principal.user_id)
        if who is None or (principal.generation is not None and principal.generation != who.generation):
            raise Unauthenticated("this token's user no longer exists")
        if not who.enabled:
            raise Forbidden("this user is disabled")
        rows = await entities.offline_enabled(conn)
    return [DeviceEntityOut(**r) for r in rows]
