"""The heap of a long-running process that allocates fast: cyclic collector settings, and handing
freed memory back to the OS after a burst (:func:`trim`).

CPython promotes whatever is alive at each young collection toward the oldest generation. In a
busy event loop that is mostly in-flight frames, coroutines and buffers, which die soon after by
refcount but still count toward the next full collection; with the default thresholds
(700, 10, 10) the gateway fanning out thousands of frames a second ran a full collection every
few seconds, each traversing every object since import (300-450 ms on a loaded 2-core box, and
every device of the process waiting behind it).

:func:`settle` freezes what exists once the process has started (imports, app, pools: alive as
long as the process, so never worth traversing again) and makes young collections rarer, so
fewer short-lived objects are promoted and full collections come far apart and only traverse
what was created since.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # allocations (net) between young collections; each stays ~1 ms
MIDDLE = 20  # young collections per middle one
OLD = 100  # middle collections before a full one is considered (CPython also waits for 25% growth)


def settle(young: int = YOUNG, middle: int = MIDDLE, old: int = OLD) -> tuple[int, int, int]:
    """Collect once, freeze the survivors, and raise the thresholds; returns the old ones.
    Call when start-up is done; objects created later are collected as usual."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, middle, old)
    return before


def freeze_long_lived() -> None:
    """Collect once and freeze the survivors, leaving the thresholds alone: for a moment when a
    large structure that lives on has just been built (a service's start-up, publish-service's
    bucket registry). A full collection would walk them again and again, in the change path's
    tail (docs/performance.md); frozen objects are skipped by every later collection."""
    gc.collect()
    gc.freeze()


_libc: object | None = None


def trim() -> bool:
    """Hands the C allocator's free pages back to the OS (glibc ``malloc_trim``): after a burst
    of short-lived buffers (thousands of handshakes and first downloads at once), the freed
    memory otherwise stays in the process as RSS. False where there is no glibc."""
    global _libc
    if _libc is None:
        import ctypes

        try:
            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim  # noqa: B018 - fails here, not at the call, when not glibc
        except (OSError, AttributeError):
            _libc = False
    if _libc is False:
        return False
    _libc.malloc_trim(0)  # type: ignore[attr-defined]
    return True
