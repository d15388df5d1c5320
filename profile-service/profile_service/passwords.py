"""Hashes and checks passwords with argon2id; knows the password rules and nothing of storage.

Hashing is deliberately slow (that is the point), so callers run it off the event loop through
``hash_password`` / ``check_password``. Passwords are never logged or put in an error message.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from offsync_shared.errors import ValidationFailed

MIN_LENGTH = 8
# argon2 itself takes any length, but hashing a multi-megabyte "password" is a cheap way to burn
# server CPU; no human types more than this.
MAX_LENGTH = 1024


@lru_cache(maxsize=2)
def hasher(env: str) -> PasswordHasher:
    """The hasher for new hashes: argon2id with the RFC 9106 "low memory" profile (t=3, 64 MiB,
    p=4), except in OFFSYNC_ENV=test, where t=1, 1 MiB, p=1 keeps the test suite fast.

    Verification reads the parameters from the stored hash, so either hasher checks any hash.
    """
    if env == "test":
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)
    return PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, type=Type.ID)


def check_rules(password: str, *, field: str = "password") -> None:
    """Refuse a password a user may not choose (422 naming the field, never echoing the value)."""
    if len(password) < MIN_LENGTH:
        raise ValidationFailed(f"a password needs at least {MIN_LENGTH} characters", field=field)
    if len(password) > MAX_LENGTH:
        raise ValidationFailed(f"a password has at most {MAX_LENGTH} characters", field=field)
    if "\x00" in password:
        raise ValidationFailed("a password cannot contain NUL characters", field=field)
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed("a password must be valid Unicode", field=field) from None


def verify(stored_hash: str | None, password: str, env: str = "prod") -> bool:
    """Whether ``password`` matches ``stored_hash``. With no stored hash (unknown user, or no
    password set) a dummy hash is checked anyway, so the answer takes as long either way."""
    if len(password) > MAX_LENGTH:
        return False
    target = stored_hash or _dummy_hash(env)
    try:
        ok = hasher(env).verify(target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError, UnicodeEncodeError):
        return False
    return ok and stored_hash is not None


@lru_cache(maxsize=2)
def _dummy_hash(env: str) -> str:
    return hasher(env).hash("offsync: no such user")


# Each hash takes up to 64 MiB and a core for a while: a burst of sign-ins waits for one of
# these threads instead of taking every core and gigabytes at once.
HASHING_THREADS = 2


@lru_cache(maxsize=1)
def _hashing_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="argon2")


async def hash_password(password: str, env: str) -> str:
    """The argon2id hash of ``password`` (computed on the hashing threads)."""
    return await asyncio.get_running_loop().run_in_executor(_hashing_pool(), hasher(env).hash, password)


async def check_password(stored_hash: str | None, password: str, env: str) -> bool:
    """``verify`` on the hashing threads."""
    return await asyncio.get_running_loop().run_in_executor(_hashing_pool(), verify, stored_hash, password, env)
