"""Who may call the admin API: a bearer token for the admin audience whose user is enabled and
holds an is_admin role, directly or through one of its teams (and, when the token names one,
is still the same incarnation of the user id: see docs/identity.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from offsync_shared.auth import ADMIN_AUDIENCE, verify_token
from offsync_shared.errors import Forbidden, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="JWT for audience offsync-admin (POST /v1/tokens)")

IS_ADMIN_SQL = """
SELECT EXISTS (
  SELECT 1 FROM admin.users u
  WHERE u.id = $1 AND u.enabled AND ($2::text IS NULL OR u.generation = $2) AND EXISTS (
    SELECT 1 FROM admin.roles r
    WHERE r.is_admin AND (
      r.id IN (SELECT role_id FROM admin.user_roles WHERE user_id = u.id)
      OR r.id IN (SELECT tr.role_id FROM admin.team_roles tr
                  JOIN admin.team_members tm ON tm.team_id = tr.team_id WHERE tm.user_id = u.id))))
"""


async def is_admin(conn: asyncpg.Connection, user_id: str, generation: str | None = None) -> bool:
    """The one admin rule, shared by the API's bearer check and the console's session check;
    ``generation`` (when the credential names one) must still be the user's current one."""
    return bool(await conn.fetchval(IS_ADMIN_SQL, user_id, generation))


@dataclass(frozen=True)
class Admin:
    user_id: str


async def require_admin(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Admin:
    if creds is None or not creds.credentials:
        raise Unauthenticated("missing bearer token")
    rt = request.app.state.runtime
    principal = verify_token(rt.settings.jwt_secret, creds.credentials, ADMIN_AUDIENCE, issuer=rt.settings.jwt_issuer)
    if len(principal.user_id) > 128 or "\x00" in principal.user_id:
        raise Unauthenticated("invalid token: bad subject")
    async with rt.pool.acquire() as conn:
        if not await is_admin(conn, principal.user_id, principal.generation):
            raise Forbidden("caller is not an enabled user with an administrator role")
    return Admin(principal.user_id)


AdminDep = Annotated[Admin, Depends(require_admin)]
