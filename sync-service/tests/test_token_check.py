"""The gateway's fast token check agrees with PyJWT (offsync_shared.auth.verify_token) on every
token: the same principal for a valid one, the same refusal for any other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import orjson
import pytest

from offsync_shared import auth
from offsync_shared.errors import Unauthenticated
from sync_service.token_check import HS256_HEADER, TokenChecker

SECRET = "s" * 40


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(now_s: float, **over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "sub": "u-1",
        "aud": auth.DEVICE_AUDIENCE,
        "iss": "offsync",
        "iat": int(now_s),
        "exp": int(now_s + 3600),
        "did": "d-1",
        "gen": "g-1",
        "sid": "s-1",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not ...}


def _raw(claims: dict[str, Any], secret: str = SECRET, header: dict[str, Any] | None = None) -> str:
    """A token signed by hand, so claims PyJWT's encoder would refuse or rewrite can be made."""
    h = _b64(orjson.dumps(header)) if header is not None else HS256_HEADER
    signing = f"{h}.{_b64(orjson.dumps(claims))}"
    return f"{signing}.{_b64(hmac.digest(secret.encode(), signing.encode(), hashlib.sha256))}"


def tokens() -> dict[str, str]:
    """Made when asked: the expiry cases are relative to now."""
    now_s = time.time()
    return {
        "minted": auth.issue_token(
            SECRET, "u-1", auth.DEVICE_AUDIENCE, device_id="d-1", generation="g", session_id="s"
        ),
        "minimal": auth.issue_token(SECRET, "u-2", auth.DEVICE_AUDIENCE),
        "by hand": _raw(_claims(now_s)),
        "expired": _raw(_claims(now_s, exp=int(now_s - 60))),
        "expired within leeway": _raw(_claims(now_s, exp=int(now_s - 2))),
        "wrong audience": _raw(_claims(now_s, aud=auth.ADMIN_AUDIENCE)),
        "audience list": _raw(_claims(now_s, aud=[auth.DEVICE_AUDIENCE, "other"])),
        "wrong issuer": _raw(_claims(now_s, iss="someone")),
        "no subject": _raw(_claims(now_s, sub=...)),
        "empty subject": _raw(_claims(now_s, sub="")),
        "numeric subject": _raw(_claims(now_s, sub=42)),
        "no exp": _raw(_claims(now_s, exp=...)),
        "exp as float": _raw(_claims(now_s, exp=now_s + 3600.5)),
        "exp as string": _raw(_claims(now_s, exp=str(int(now_s + 3600)))),
        "exp as bool": _raw(_claims(now_s, exp=True)),
        "iat in the future": _raw(_claims(now_s, iat=int(now_s + 600))),
        "nbf in the future": _raw(_claims(now_s, nbf=int(now_s + 600))),
        "nbf passed": _raw(_claims(now_s, nbf=int(now_s - 600))),
        "jti number": _raw(_claims(now_s, jti=5)),
        "jti string": _raw(_claims(now_s, jti="j-1")),
        "generation not a string": _raw(_claims(now_s, gen=7)),
        "other secret": _raw(_claims(now_s), secret="t" * 40),
        "alg none": _raw(_claims(now_s), header={"alg": "none", "typ": "JWT"}),
        "header with kid": _raw(_claims(now_s), header={"alg": "HS256", "typ": "JWT", "kid": "k"}),
        "header crit": _raw(_claims(now_s), header={"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
        "garbage": "not.a.token",
        "two parts": HS256_HEADER + ".e30",
        "four parts": _raw(_claims(now_s)) + ".x",
        "empty": "",
        "non ascii": HS256_HEADER + ".é.é",
    }


def _outcome(verify: Any, token: str) -> Any:
    try:
        return verify(token)
    except Unauthenticated as exc:
        return ("refused", exc.message)


NAMES = sorted(tokens())


@pytest.mark.parametrize("name", NAMES)
def test_fast_check_agrees_with_pyjwt(name: str) -> None:
    token = tokens()[name]
    checker = TokenChecker(SECRET, auth.DEVICE_AUDIENCE)
    expected = _outcome(lambda t: auth.verify_token(SECRET, t, auth.DEVICE_AUDIENCE), token)
    assert _outcome(checker.verify, token) == expected


def test_fast_path_serves_the_tokens_offsync_mints() -> None:
    checker = TokenChecker(SECRET, auth.DEVICE_AUDIENCE)
    made = tokens()
    for name in ("minted", "minimal", "by hand", "expired within leeway", "nbf passed", "jti string"):
        assert checker.fast(made[name]) is not None, name
    for name in ("expired", "wrong audience", "other secret", "alg none", "header with kid", "iat in the future"):
        assert checker.fast(made[name]) is None, name


def test_expiry_is_checked_on_every_call() -> None:
    now_s = time.time()
    clock = [now_s]
    checker = TokenChecker(SECRET, auth.DEVICE_AUDIENCE, clock=lambda: clock[0])
    token = auth.issue_token(SECRET, "u-1", auth.DEVICE_AUDIENCE, ttl_seconds=60, now=now_s)
    assert checker.verify(token).user_id == "u-1"
    clock[0] = now_s + 66  # past exp + leeway: the fast path steps aside; PyJWT (real clock) decides
    assert checker.fast(token) is None


def test_pyjwt_header_is_the_fast_paths_header() -> None:
    token = jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")
    assert token.split(".")[0] == HS256_HEADER
