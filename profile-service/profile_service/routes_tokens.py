"""Token minting for users (admin only): admin-audience tokens for the admin/records APIs,
device-audience tokens (with a device id) for the sync websocket."""

from __future__ import annotations

import time

from fastapi import APIRouter

from offsync_shared.auth import ADMIN_AUDIENCE, DEVICE_AUDIENCE, issue_token
from offsync_shared.errors import Conflict, NotFound, ValidationFailed
from profile_service import users
from profile_service.context import CtxDep
from profile_service.responses import TokenOut
from profile_service.schemas import TokenIn

router = APIRouter(prefix="/v1", tags=["tokens"])


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenOut,
    summary="Mint a token for a user (admin)",
    description=(
        "An admin-audience token for the admin and records APIs, or a device-audience token (with a "
        "device_id) for the sync websocket, valid ttl_seconds. The user must exist and be enabled. Recorded "
        "in the audit log."
    ),
)
async def mint_token(ctx: CtxDep, body: TokenIn) -> TokenOut:
    if body.audience == "device" and body.device_id is None:
        raise ValidationFailed("a device token needs a device_id", field="device_id")
    if body.audience == "admin" and body.device_id is not None:
        raise ValidationFailed("device_id is only for device tokens", field="device_id")
    async with ctx.tx() as conn:  # a transaction for the audit entry: minting a token is recorded
        enabled = await users.is_enabled(conn, body.user_id)
    if enabled is None:
        raise NotFound(f"user {body.user_id!r} not found", field="user_id")
    if not enabled:
        raise Conflict(f"user {body.user_id!r} is disabled", field="user_id")
    now = time.time()
    audience = DEVICE_AUDIENCE if body.audience == "device" else ADMIN_AUDIENCE
    token = issue_token(
        ctx.settings.jwt_secret,
        body.user_id,
        audience,
        ttl_seconds=body.ttl_seconds,
        issuer=ctx.settings.jwt_issuer,
        device_id=body.device_id,
        now=now,
    )
    return TokenOut.model_validate(
        {
            "token": token,
            "audience": audience,
            "user_id": body.user_id,
            "device_id": body.device_id,
            "expires_at": int(now + body.ttl_seconds),
        }
    )
