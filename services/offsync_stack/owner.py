"""Servers and services this process starts end when it dies, however it dies.

They run in sessions of their own (a Ctrl-C in the terminal must not kill them under a test or
mid-drain), so nothing ends them when their owner is killed: an xdist worker that its controller
SIGKILLs after its exit timeout, a ``make up`` or bench killed with -9, an out-of-memory kill.
Each such death left an embedded PostgreSQL and a broker running. Linux's parent-death signal
ends them with their owner instead; the owner's own clean stop stays the normal path.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def ends_with_owner(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that has the child receive ``sig`` when this
    process dies; None where that cannot be promised: not Linux, or not the main thread (the
    signal follows the thread that started the child, and a worker thread may end long before
    the process)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, called after it
    owner = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != owner:  # the owner died between the fork and the line above
            os.kill(os.getpid(), sig)

    return arm
