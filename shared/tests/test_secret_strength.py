"""Which secrets may sign production tokens: a table of refused and accepted ones."""

from __future__ import annotations

import pytest

from offsync_shared.secret_strength import estimated_bits, is_loopback, weakness
from offsync_shared.settings import DEV_JWT_SECRET

REFUSED = [
    ("dev-secret", DEV_JWT_SECRET, "development secret"),
    ("dev-secret-trailing-space", DEV_JWT_SECRET + " ", "whitespace"),
    ("dev-secret-leading-tab", "\t" + DEV_JWT_SECRET, "whitespace"),
    ("dev-secret-padded", DEV_JWT_SECRET + "-prod", "development secret"),
    ("dev-secret-upper", DEV_JWT_SECRET.upper(), "development secret"),
    ("k8s-placeholder", "CHANGE-ME-TO-A-RANDOM-SECRET-OF-32-OR-MORE-CHARS", "placeholder"),
    ("replace-me", "replace_me_with_something_long_and_random_1234", "placeholder"),
    ("example", "this-is-an-example-secret-value-0123456789", "placeholder"),
    ("32-equal", "a" * 32, "repetitive"),
    ("two-letters", "ab" * 20, "repetitive"),
    ("repeated-unit", "Xy7#Qp2!Lm9$" * 3, "repetitive"),
    ("short", "Zx8#kQ2!vB7@", "shorter"),
    ("mostly-one-letter", "a" * 22 + "bcdefghijk", "entropy"),
]
ACCEPTED = [
    ("hex-16-bytes", "3f9a1c07be52d84e6a0b7c91f2d3e845"),
    ("base64-32-bytes", "Vg2mQf3xZ0Lr8Tn+K1pW7cY4hJ6sAe9BdR5uNoXyMkI="),
    ("passphrase-ish", "correct horse battery staple orbits 7 violet moons"),
]


@pytest.mark.parametrize(("secret", "why"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused(secret: str, why: str) -> None:
    reason = weakness(secret, DEV_JWT_SECRET)
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize("secret", [r[1] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED])
def test_accepted(secret: str) -> None:
    assert weakness(secret, DEV_JWT_SECRET) is None, estimated_bits(secret)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True)]
    + [("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.org", False)],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
