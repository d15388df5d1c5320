"""The embedded PostgreSQL's system user: created once even when many processes start at once.

On a fresh machine the parallel test workers each start a PostgreSQL as root, and each used to
`useradd` the server's user at the same moment: concurrent `useradd`s clobbered /etc/passwd, and
a worker ran initdb under a uid that no longer existed (CI on a fresh machine: 422 errors)."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import subprocess
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier

import pytest

from offsync_stack.embedded import system_user, system_users_locked

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: root only")

RACERS = 6


def _race(name: str, start: Barrier, uids: multiprocessing.Queue[int]) -> None:
    start.wait(timeout=30)
    uids.put(system_user(name).pw_uid)


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    name = f"offsync-race-{os.getpid()}"
    yield name
    # Under the same lock: a userdel racing another process's useradd clobbers just the same.
    with system_users_locked():
        subprocess.run(["userdel", name], check=False, capture_output=True)


def test_processes_starting_at_once_agree_on_one_existing_user(throwaway_user: str) -> None:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(RACERS)
    uids: multiprocessing.Queue[int] = ctx.Queue()
    racers = [ctx.Process(target=_race, args=(throwaway_user, start, uids)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert [racer.exitcode for racer in racers] == [0] * RACERS
    seen = {uids.get(timeout=5) for _ in range(RACERS)}
    assert seen == {pwd.getpwnam(throwaway_user).pw_uid}  # one uid, and it is the user's
