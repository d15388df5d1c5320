"""Sign-in with an external OpenID Connect provider, tested against a provider the test serves
itself on loopback (discovery document + JWKS): issuer, audience, expiry and clock skew, key
rotation, algorithm confusion, and the configured claim mapped to Offsync users."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from profile_harness import Service

from offsync_shared.auth import DEVICE_AUDIENCE, verify_token
from offsync_shared.errors import Unauthenticated
from offsync_stack.accounts import create_user
from offsync_stack.infra import Infra
from offsync_stack.testing import make_env, release_env
from profile_service.app import create_app
from profile_service.oidc import OidcConfig, OidcVerifier
from profile_service.settings import Settings

pytestmark = pytest.mark.integration

AUDIENCE = "offsync-field-app"


@dataclass
class Provider:
    """An identity provider on 127.0.0.1: publishes ``keys`` and counts JWKS fetches."""

    base: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    fetches: int = 0

    @property
    def issuer(self) -> str:
        return self.base

    def add_rsa(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            if isinstance(key, rsa.RSAPrivateKey):
                jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk.update(alg="RS256")
            else:
                jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
                jwk.update(alg="ES256")
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, *, key: Any = None, alg: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUDIENCE, "sub": "idp-123", "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        signing_key = key if key is not None else self.keys[kid]
        algorithm = alg or ("RS256" if isinstance(signing_key, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(body, signing_key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    prov = Provider()
    prov.add_rsa("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": prov.issuer, "jwks_uri": prov.base + "/jwks"}
            elif self.path == "/jwks":
                prov.fetches += 1
                body = prov.jwks()
            else:
                self.send_error(404)
                return
            raw = orjson.dumps(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    prov.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield prov
    finally:
        server.shutdown()
        server.server_close()


@pytest_asyncio.fixture(scope="module")
async def svc(infra: Infra, provider: Provider) -> AsyncIterator[Service]:
    env = await make_env(infra, "oidc")
    settings = Settings(
        **env.settings_kwargs(),
        oidc_issuer=provider.issuer,
        oidc_audience=AUDIENCE,
        oidc_user_claim="email",
        oidc_leeway_s=30,
        oidc_jwks_min_refetch_s=0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        service = Service(app, settings, env)
        async with service.client(service.token()) as admin:
            role = {"id": "field", "name": "Field", "read_offline_profile": True}
            assert (await admin.post("/v1/roles", json=role)).status_code == 201
            await create_user(
                admin, "u-ada", username="ada@example.org", password="unused-password", role_ids=["field"]
            )
        yield service
    await release_env(infra, env)


async def _exchange(svc: Service, token: str) -> httpx.Response:
    async with svc.client() as c:
        return await c.post("/v1/auth/oidc", json={"token": token, "device_id": "phone"})


async def test_a_provider_token_signs_the_mapped_user_in(svc: Service, provider: Provider) -> None:
    resp = await _exchange(svc, provider.token("k1", email="Ada@Example.org"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user_id"] == "u-ada" and body["refresh_token"]
    assert verify_token(svc.settings.jwt_secret, body["access_token"], DEVICE_AUDIENCE).device_id == "phone"


async def test_the_server_tells_devices_which_provider_it_trusts(svc: Service, provider: Provider) -> None:
    async with svc.client() as c:
        config = (await c.get("/v1/auth/config")).json()
    assert config["service"] == "offsync" and config["oidc_issuer"] == provider.issuer


def _forged_hs256(provider: Provider) -> str:
    """Algorithm confusion: HS256 "signed" with the provider's public key as the HMAC secret
    (built by hand: PyJWT itself refuses to make one)."""
    public_pem = provider.keys["k1"].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "email": "ada@example.org", "exp": now + 300}

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"})) + b"." + b64(orjson.dumps(claims))
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


REFUSED = [
    ("wrong-issuer", lambda p: p.token("k1", email="ada@example.org", iss="https://evil.example"), "another issuer"),
    ("wrong-audience", lambda p: p.token("k1", email="ada@example.org", aud="someone-else"), "another audience"),
    ("expired-beyond-skew", lambda p: p.token("k1", email="ada@example.org", exp=int(time.time()) - 60), "expired"),
    ("no-exp", lambda p: p.token("k1", email="ada@example.org", exp=None), "exp"),
    ("unknown-user", lambda p: p.token("k1", email="nobody@example.org"), "no Offsync user"),
    ("claim-missing", lambda p: p.token("k1"), "'email'"),
    (
        "foreign-key",
        lambda p: p.token(
            "k1", key=rsa.generate_private_key(public_exponent=65537, key_size=2048), email="ada@example.org"
        ),
        "Signature",
    ),
    ("unpublished-kid", lambda p: p.token("nope", key=p.keys["k1"], email="ada@example.org"), "does not publish"),
    ("alg-none", lambda p: jwt.encode({"iss": p.issuer, "aud": AUDIENCE}, "", algorithm="none"), "not accepted"),
    ("hs256-with-public-key", _forged_hs256, "not accepted"),
]


@pytest.mark.parametrize(("make", "needle"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_refused_provider_tokens(svc: Service, provider: Provider, make: Any, needle: str) -> None:
    resp = await _exchange(svc, make(provider))
    assert resp.status_code == 401, resp.text
    assert needle in resp.json()["error"]["message"]


async def test_clock_skew_within_the_allowance_is_accepted(svc: Service, provider: Provider) -> None:
    now = int(time.time())
    late = provider.token("k1", email="ada@example.org", exp=now - 10)  # leeway is 30 s here
    early = provider.token("k1", email="ada@example.org", iat=now + 10, nbf=now + 10)
    assert (await _exchange(svc, late)).status_code == 200
    assert (await _exchange(svc, early)).status_code == 200


async def test_key_rotation_is_picked_up(svc: Service, provider: Provider) -> None:
    assert (await _exchange(svc, provider.token("k1", email="ada@example.org"))).status_code == 200
    provider.add_rsa("k2")  # the provider rotates: a new key appears, tokens are signed with it
    provider.keys["k3"] = ec.generate_private_key(ec.SECP256R1())
    assert (await _exchange(svc, provider.token("k2", email="ada@example.org"))).status_code == 200
    assert (await _exchange(svc, provider.token("k3", email="ada@example.org"))).status_code == 200


async def test_unknown_key_ids_do_not_hammer_the_provider(provider: Provider) -> None:
    clock = [1000.0]
    config = OidcConfig(issuer=provider.issuer, audience=AUDIENCE, min_refetch_s=30, ttl_s=300)
    async with httpx.AsyncClient() as client:
        verifier = OidcVerifier(config, client, clock=lambda: clock[0])
        await verifier.verify(provider.token("k1", email="x"))
        before = provider.fetches
        for i in range(20):
            with pytest.raises(Unauthenticated):
                await verifier.verify(provider.token(f"random-{i}", key=provider.keys["k1"], email="x"))
        assert provider.fetches == before  # within min_refetch_s of the last fetch: no refetch
        clock[0] += 31
        with pytest.raises(Unauthenticated):
            await verifier.verify(provider.token("random-x", key=provider.keys["k1"], email="x"))
        assert provider.fetches == before + 1
        # A key the provider withdrew stops being trusted once the cached set expires.
        provider.keys.pop("k1")
        provider.add_rsa("k1-new")
        clock[0] += 301
        with pytest.raises(Unauthenticated, match="does not publish"):
            await verifier.verify(provider.token("k1", key=provider.keys["k1-new"], email="x"))


async def test_no_provider_configured_is_a_404(infra: Infra) -> None:
    env = await make_env(infra, "nooidc")
    app = create_app(Settings(**env.settings_kwargs()))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as c:
            resp = await c.post("/v1/auth/oidc", json={"token": "x.y.z", "device_id": "d"})
    await release_env(infra, env)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_an_issuer_without_an_audience_is_refused() -> None:
    with pytest.raises(ValueError, match="OFFSYNC_OIDC_AUDIENCE"):
        Settings(oidc_issuer="https://idp.example")
