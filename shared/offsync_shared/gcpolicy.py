"""Garbage-collector settling for long-running services.

A full (generation 2) collection walks every object the process holds. In a service whose heap
is mostly long-lived (modules, a bucket registry of thousands of definitions) that walk measured
0.4-0.8 s under load at full bench size, landing in the change path's tail. ``settle`` collects
once and freezes what survives into the permanent generation, which collections skip; call it
when a large long-lived structure has just been built (service start, a new registry).
"""

from __future__ import annotations

import gc


def settle() -> None:
    gc.collect()
    gc.freeze()
