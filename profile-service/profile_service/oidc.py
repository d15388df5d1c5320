"""Verifies access tokens of an external OpenID Connect provider against its published keys
(JWKS): signature, issuer, audience, expiry with a clock-skew allowance, and key rotation.

Only asymmetric algorithms are accepted, so a token "signed" with the provider's public key as
an HMAC secret, or with ``alg: none``, is refused. Keys are fetched from the provider's JWKS
(found through its discovery document unless configured), cached, refetched when a token names a
key id not in the cache (the provider rotated) at most once per ``min_refetch_s``, and
refreshed every ``ttl_s`` so a key the provider withdrew stops being trusted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jwt

from offsync_shared.errors import Unauthenticated, Unavailable

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True, slots=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str = ""  # empty: read jwks_uri from {issuer}/.well-known/openid-configuration
    user_claim: str = "preferred_username"  # the claim naming the Offsync user
    maps_to: Literal["username", "id"] = "username"  # what that claim's value is on our side
    leeway_s: float = 60.0  # clock skew allowed on exp / nbf / iat
    min_refetch_s: float = 30.0  # an unknown key id refetches the JWKS at most this often
    ttl_s: float = 300.0  # the cached key set is refreshed after this long


class OidcVerifier:
    """Holds the provider's current keys; ``verify`` answers a token's claims or raises 401."""

    def __init__(self, config: OidcConfig, client: httpx.AsyncClient, clock: Any = time.monotonic) -> None:
        self.config = config
        self.client = client
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; ``Unauthenticated`` for anything not right."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("invalid identity-provider token: malformed") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC:
            raise Unauthenticated(f"invalid identity-provider token: algorithm {str(alg)[:20]!r} is not accepted")
        key = await self._key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("identity-provider token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("identity-provider token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("identity-provider token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid identity-provider token: {exc}") from None
        return claims

    def subject(self, claims: dict[str, Any]) -> str:
        """The configured claim's value: who this is on the Offsync side."""
        value = claims.get(self.config.user_claim)
        if not isinstance(value, str) or not value or len(value) > 256 or "\x00" in value:
            raise Unauthenticated(f"identity-provider token has no usable {self.config.user_claim!r} claim")
        return value

    async def _key(self, kid: object) -> jwt.PyJWK:
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.config.ttl_s
        missing = not isinstance(kid, str) or kid not in self._keys
        may_refetch = self._fetched_at is None or now - self._fetched_at >= self.config.min_refetch_s
        if stale or (missing and may_refetch):
            async with self._lock:
                if self._fetched_at is None or self.clock() - self._fetched_at >= min(
                    self.config.min_refetch_s, self.config.ttl_s
                ):
                    await self._fetch()
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise Unauthenticated("identity-provider token is signed with a key the provider does not publish")

    async def _fetch(self) -> None:
        try:
            url = self.config.jwks_url or await self._discover()
            resp = await self.client.get(url)
            resp.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(resp.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            if self._keys:  # keep the keys we had: the provider being briefly away is no reason to lock out
                self._fetched_at = self.clock()
                return
            raise Unavailable(f"the identity provider's keys cannot be fetched: {type(exc).__name__}") from None
        self._keys = {k.key_id: k for k in keys if k.key_id}
        if not self._keys and len(keys) == 1:
            self._keys = {"": keys[0]}
        self._fetched_at = self.clock()

    async def _discover(self) -> str:
        resp = await self.client.get(self.config.issuer.rstrip("/") + "/.well-known/openid-configuration")
        resp.raise_for_status()
        jwks_uri = resp.json().get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError("no jwks_uri in the discovery document")
        return jwks_uri
