"""Tokens: audience, expiry, signature and subject are all enforced."""

from __future__ import annotations

import time

import pytest

from offsync_shared.auth import ADMIN_AUDIENCE, DEVICE_AUDIENCE, bearer, issue_token, verify_token
from offsync_shared.errors import Unauthenticated

SECRET = "s" * 40


def test_valid_token_gives_principal() -> None:
    tok = issue_token(SECRET, "u1", DEVICE_AUDIENCE, device_id="d1")
    p = verify_token(SECRET, tok, DEVICE_AUDIENCE)
    assert (p.user_id, p.device_id, p.audience) == ("u1", "d1", DEVICE_AUDIENCE)


@pytest.mark.parametrize(
    "token, audience, reason",
    [
        (lambda: issue_token(SECRET, "u1", DEVICE_AUDIENCE), ADMIN_AUDIENCE, "wrong audience"),
        (
            lambda: issue_token(SECRET, "u1", ADMIN_AUDIENCE, now=time.time() - 7200, ttl_seconds=60),
            ADMIN_AUDIENCE,
            "expired",
        ),
        (lambda: issue_token("x" * 40, "u1", ADMIN_AUDIENCE), ADMIN_AUDIENCE, "invalid"),
        (lambda: issue_token(SECRET, "u1", ADMIN_AUDIENCE, issuer="evil"), ADMIN_AUDIENCE, "invalid"),
        (lambda: "garbage", ADMIN_AUDIENCE, "invalid"),
    ],
    ids=["device-token-on-admin", "expired", "forged-signature", "wrong-issuer", "garbage"],
)
def test_refused(token, audience: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        verify_token(SECRET, token(), audience)


@pytest.mark.parametrize(
    "header", [None, "", "Basic abc", "Bearer ", "token"], ids=["none", "empty", "basic", "blank", "no-scheme"]
)
def test_bearer_header_refused(header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        bearer(header)


def test_bearer_header_parsed() -> None:
    assert bearer("Bearer abc.def") == "abc.def"
