"""Matches SQL ``LIKE`` patterns (``%`` any run, ``_`` one character, ``\\`` escapes) in time
linear in the value's length, so a hostile value cannot stall whoever evaluates a filter.

A translated regex (``.*foo.*bar.*``) backtracks: a 192 kB value against ``%foo%bar%`` took
seconds. Here the pattern is split at ``%`` into segments of literal characters and ``_``; the
first segment must match at the start, the last at the end, and every middle one at its leftmost
place after the previous one (leftmost is always safe: a later place leaves less room, never
more). Each segment is searched once, left to right, so the work is O(len(value) × longest
segment), and a segment without ``_`` is a plain substring search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

ANY_ONE = None  # a `_` inside a segment


@dataclass(frozen=True, slots=True)
class LikePattern:
    """A parsed pattern: the ``segments`` between its ``%``s, each a tuple of characters or ANY_ONE."""

    segments: tuple[tuple[str | None, ...], ...]

    def matches(self, value: str) -> bool:
        return _matches(self, value)


@lru_cache(maxsize=1024)
def compile_like(pattern: str) -> LikePattern:
    segments: list[tuple[str | None, ...]] = []
    current: list[str | None] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            current.append(pattern[i + 1])
            i += 2
            continue
        if ch == "%":
            segments.append(tuple(current))
            current = []
        else:
            current.append(ANY_ONE if ch == "_" else ch)
        i += 1
    segments.append(tuple(current))
    return LikePattern(tuple(segments))


def like(value: str, pattern: str) -> bool:
    """``value LIKE pattern`` with PostgreSQL's semantics (default escape ``\\``)."""
    return _matches(compile_like(pattern), value)


def _fits(seg: tuple[str | None, ...], value: str, at: int) -> bool:
    if at < 0 or at + len(seg) > len(value):
        return False
    for k, c in enumerate(seg):
        if c is not ANY_ONE and value[at + k] != c:
            return False
    return True


def _find(seg: tuple[str | None, ...], value: str, start: int) -> int:
    """Leftmost position >= start where ``seg`` fits, or -1."""
    if ANY_ONE not in seg:
        return value.find("".join(seg), start)  # type: ignore[arg-type]
    last = len(value) - len(seg)
    for at in range(start, last + 1):
        if _fits(seg, value, at):
            return at
    return -1


def _matches(p: LikePattern, value: str) -> bool:
    segs = p.segments
    if len(segs) == 1:  # no %: the whole value, character for character
        return len(segs[0]) == len(value) and _fits(segs[0], value, 0)
    first, *middle, last = segs
    if not _fits(first, value, 0):
        return False
    pos = len(first)
    tail_at = len(value) - len(last)
    if tail_at < pos or not _fits(last, value, tail_at):
        return False
    for seg in middle:
        if not seg:
            continue
        at = _find(seg, value, pos)
        if at < 0 or at + len(seg) > tail_at:
            return False
        pos = at + len(seg)
    return True
