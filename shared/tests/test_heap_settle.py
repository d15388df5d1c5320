"""heap.settle: the start-up heap is frozen and young collections come less often; objects
created afterwards are still collected."""

from __future__ import annotations

import gc
import weakref

from offsync_shared import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_settle_freezes_and_raises_thresholds_and_later_cycles_are_still_collected() -> None:
    before = gc.get_threshold()
    try:
        assert heap.settle(5_000, 7, 9) == before
        assert gc.get_threshold() == (5_000, 7, 9)
        assert gc.get_freeze_count() > 0
        node = _Node()
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_trim_hands_freed_memory_back_and_is_safe_to_repeat() -> None:
    import platform

    blocks = [bytes(4096) for _ in range(2000)]  # malloc'd (above pymalloc's 512 B)
    del blocks
    first, second = heap.trim(), heap.trim()
    assert first == second  # the allocator is looked up once
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
