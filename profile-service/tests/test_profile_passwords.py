"""Password hashing and rules (pure): argon2id, parameters by environment, rules that never echo."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from offsync_shared.errors import ValidationFailed
from profile_service import passwords


def test_hashes_are_argon2id_and_verify() -> None:
    h = passwords.hasher("test").hash("s3cret-enough")
    assert h.startswith("$argon2id$")
    assert passwords.verify(h, "s3cret-enough", "test")
    assert not passwords.verify(h, "s3cret-enougH", "test")
    assert not passwords.verify(None, "s3cret-enough", "test")  # no stored hash: never a match
    assert not passwords.verify("not a hash", "s3cret-enough", "test")


def test_production_parameters_are_the_rfc_9106_profile_and_test_ones_cheaper() -> None:
    prod, test = passwords.hasher("prod"), passwords.hasher("test")
    assert (prod.time_cost, prod.memory_cost, prod.parallelism) == (3, 65536, 4)
    assert test.memory_cost < prod.memory_cost
    # A hash made with either set of parameters verifies under the other hasher.
    assert PasswordHasher().verify(test.hash("pw-pw-pw-pw"), "pw-pw-pw-pw")


@pytest.mark.parametrize(
    ("password", "ok"),
    [("1234567", False), ("12345678", True), ("x" * 1024, True), ("x" * 1025, False), ("abcd\x00efgh", False)],
    ids=["too-short", "shortest", "longest", "too-long", "nul"],
)
def test_rules(password: str, ok: bool) -> None:
    if ok:
        passwords.check_rules(password)
    else:
        with pytest.raises(ValidationFailed) as err:
            passwords.check_rules(password)
        assert password not in err.value.message
