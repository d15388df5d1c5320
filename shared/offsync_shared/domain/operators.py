"""Knows the custom-filter operators: their names, which attribute types each applies to, how many
values each takes, the nesting limit, and what each means on a stored value (pure; no I/O).

``compare`` is the one Python meaning of a non-user operator; publish-service's SQL compiler and
the records API's query are checked against it (PostgreSQL as the oracle). String comparisons are
case-insensitive (``fold``: per-character simple lower-case mapping, what PostgreSQL's ``lower()``
does under a UTF-8 locale); ``like`` is matched by a non-backtracking matcher, linear in the value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from offsync_shared.domain.attributes import ATTRIBUTE_TYPES

MAX_GROUP_LEVELS = 3  # and/or groups nest at most this deep
MAX_CONDITIONS = 100  # conditions and groups in one custom filter
MAX_IN_VALUES = 1000

ValueShape = Literal["typed", "list", "text", "none"]

COMPARE_TYPES: tuple[str, ...] = ("string", "int", "decimal", "datetime", "lookup", "choice", "bool")
ORDERED_TYPES: tuple[str, ...] = ("string", "int", "decimal", "datetime")
TEXT_TYPES: tuple[str, ...] = ("string",)
LIST_TYPES: tuple[str, ...] = ("string", "int", "decimal", "datetime", "lookup", "choice")
ANY_TYPE: tuple[str, ...] = ATTRIBUTE_TYPES


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """``types``: attribute types the operator applies to. ``value``: "typed" one value of the
    attribute's type, "list" a non-empty list of such values, "text" a string, "none" no value.
    ``lookup_targets``: for lookups, the targets the operator makes sense for. ``params``: the
    user-dependent values it reads (user-context operators only)."""

    types: tuple[str, ...]
    value: ValueShape
    lookup_targets: tuple[str, ...] = ()
    params: tuple[str, ...] = ()

    @property
    def user_context(self) -> bool:
        return bool(self.params)


# Parameters bound per user: user = user id, teams = user's teams, hier = user + users below in the
# manager hierarchy, hierall = hier + their teams, bu = user's business unit, lang = user's language.
OPERATORS: Mapping[str, OperatorSpec] = {
    "eq": OperatorSpec(COMPARE_TYPES, "typed"),
    "ne": OperatorSpec(COMPARE_TYPES, "typed"),
    "gt": OperatorSpec(ORDERED_TYPES, "typed"),
    "ge": OperatorSpec(ORDERED_TYPES, "typed"),
    "lt": OperatorSpec(ORDERED_TYPES, "typed"),
    "le": OperatorSpec(ORDERED_TYPES, "typed"),
    "like": OperatorSpec(TEXT_TYPES, "text"),
    "not-like": OperatorSpec(TEXT_TYPES, "text"),
    "in": OperatorSpec(LIST_TYPES, "list"),
    "not-in": OperatorSpec(LIST_TYPES, "list"),
    "null": OperatorSpec(ANY_TYPE, "none"),
    "not-null": OperatorSpec(ANY_TYPE, "none"),
    "begins-with": OperatorSpec(TEXT_TYPES, "text"),
    "not-begin-with": OperatorSpec(TEXT_TYPES, "text"),
    "ends-with": OperatorSpec(TEXT_TYPES, "text"),
    "not-end-with": OperatorSpec(TEXT_TYPES, "text"),
    "eq-userid": OperatorSpec(("lookup",), "none", ("user", "owner"), ("user",)),
    "ne-userid": OperatorSpec(("lookup",), "none", ("user", "owner"), ("user",)),
    "eq-userteams": OperatorSpec(("lookup",), "none", ("team", "owner"), ("teams",)),
    "eq-useroruserteams": OperatorSpec(("lookup",), "none", ("user", "team", "owner"), ("user", "teams")),
    "eq-useroruserhierarchy": OperatorSpec(("lookup",), "none", ("user", "owner"), ("hier",)),
    "eq-useroruserhierarchyandteams": OperatorSpec(("lookup",), "none", ("user", "team", "owner"), ("hierall",)),
    "eq-businessid": OperatorSpec(("lookup",), "none", ("businessunit",), ("bu",)),
    "ne-businessid": OperatorSpec(("lookup",), "none", ("businessunit",), ("bu",)),
    "eq-userlanguage": OperatorSpec(("int", "choice"), "none", (), ("lang",)),
}

STATIC_OPERATORS = frozenset(name for name, spec in OPERATORS.items() if not spec.user_context)
PARAMS_OF_OPERATOR: Mapping[str, tuple[str, ...]] = {
    name: spec.params for name, spec in OPERATORS.items() if spec.user_context
}
STRING_OPERATORS = frozenset({"like", "not-like", "begins-with", "not-begin-with", "ends-with", "not-end-with"})
ORDERING = frozenset({"gt", "ge", "lt", "le"})


# ------------------------------------------------------------------------------ case folding

_SPECIAL_LOWER = frozenset("\u03a3\u0130")  # Σ (contextual final sigma), İ (two code points in full mapping)


def _lower1(ch: str) -> str:
    return "i" if ch == "\u0130" else ch.lower()


def fold(s: str) -> str:
    """``s`` lower-cased one character at a time (Unicode simple case mapping), as PostgreSQL's
    ``lower()`` does under a UTF-8 locale: how string operators compare without regard to case."""
    if s.isascii():
        return s.lower()
    if _SPECIAL_LOWER.isdisjoint(s):
        return s.lower()
    return "".join(map(_lower1, s))


# ------------------------------------------------------------------------------ like

LikeToken = str | None  # a literal character, or None for "_" (any one character); "%" splits


def like_parts(pattern: str) -> list[list[LikeToken]]:
    """``pattern`` split at its ``%`` wildcards into runs of tokens (a literal character, or None
    for ``_``). A backslash makes the next character literal; a trailing one is itself literal."""
    parts: list[list[LikeToken]] = [[]]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            parts[-1].append(pattern[i + 1])
            i += 2
            continue
        if ch == "%":
            parts.append([])
        else:
            parts[-1].append(None if ch == "_" else ch)
        i += 1
    return parts


def like_sql_pattern(pattern: str) -> str:
    """``pattern`` rewritten for SQL ``LIKE`` with backslash as its escape, every literal character
    that SQL would read as a wildcard or an escape escaped."""
    out: list[str] = []
    for k, run in enumerate(like_parts(pattern)):
        if k:
            out.append("%")
        for tok in run:
            out.append("_" if tok is None else ("\\" + tok if tok in "%_\\" else tok))
    return "".join(out)


def _run_at(run: Sequence[LikeToken], s: str, at: int) -> bool:
    for k, tok in enumerate(run):
        if tok is not None and s[at + k] != tok:
            return False
    return True


def _find_run(run: Sequence[LikeToken], s: str, start: int, end: int) -> int:
    """Leftmost position >= start where ``run`` matches inside s[:end], or -1. Literal runs use
    str.find; runs with ``_`` search with a bit-parallel (shift-and) automaton: linear in s."""
    m = len(run)
    if m == 0:
        return start
    if None not in run:
        return s.find("".join(t for t in run if t is not None), start, end)
    masks: dict[str, int] = {}
    anymask = 0
    for k, tok in enumerate(run):
        if tok is None:
            anymask |= 1 << k
    for k, tok in enumerate(run):
        if tok is not None:
            masks[tok] = masks.get(tok, anymask) | (1 << k)
    accept = 1 << (m - 1)
    state = 0
    for i in range(start, end):
        state = ((state << 1) | 1) & masks.get(s[i], anymask)
        if state & accept:
            return i - m + 1
    return -1


@lru_cache(maxsize=4096)
def like_matcher(pattern: str) -> Callable[[str], bool]:
    """A matcher of already-folded values against ``pattern`` (folded here): ``%`` any run,
    ``_`` any one character, ``\\`` escapes. Greedy leftmost placement of the runs between ``%``
    is exact for such patterns, so no backtracking: time linear in the value."""
    parts = [[None if t is None else fold(t) for t in run] for run in like_parts(pattern)]
    # Folding a literal may yield two characters (never under the simple mapping); keep tokens single.
    parts = [[t for tok in run for t in ([None] if tok is None else list(tok))] for run in parts]
    if len(parts) == 1:
        only = parts[0]
        return lambda s: len(s) == len(only) and _run_at(only, s, 0)
    head, *middle, tail = parts

    def match(s: str) -> bool:
        n = len(s)
        if len(head) + len(tail) > n or not _run_at(head, s, 0) or not _run_at(tail, s, n - len(tail)):
            return False
        pos, end = len(head), n - len(tail)
        for run in middle:
            at = _find_run(run, s, pos, end)
            if at < 0:
                return False
            pos = at + len(run)
        return True

    return match


def like(value: str, pattern: str) -> bool:
    """SQL-LIKE match of ``value`` against ``pattern``, case-insensitive."""
    return like_matcher(pattern)(fold(value))


# ------------------------------------------------------------------------------ meaning


def jtype(v: object) -> str:
    """The JSON type of a decoded value, as jsonb_typeof names it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _same(a: object, v: object) -> bool:
    """Equality as a filter sees it: same JSON type, strings without regard to case."""
    if isinstance(a, str):
        return isinstance(v, str) and fold(a) == fold(v)
    return a is not None and jtype(a) == jtype(v) and a == v


def compare(op: str, a: object, v: object) -> bool:
    """A non-user operator on stored value ``a`` (None when missing) with operand ``v``.

    Typed like jsonb: a leaf holds only when ``a`` has a value of the operand's JSON type; every
    operator except ``null`` (negations included) is false on a missing value. Strings compare
    case-insensitively (``fold``), ordered by code point."""
    if op == "null":
        return a is None
    if op == "not-null":
        return a is not None
    if a is None:
        return False
    if op == "eq":
        return _same(a, v)
    if op == "ne":
        return not _same(a, v)
    if op == "in":
        return any(_same(a, x) for x in _values(v))
    if op == "not-in":
        return not any(_same(a, x) for x in _values(v))
    if op in ORDERING:
        if isinstance(a, str) and isinstance(v, str):
            return _ordered_text(op, fold(a), fold(v))
        if isinstance(a, bool) or isinstance(v, bool):
            return isinstance(a, bool) and isinstance(v, bool) and _ordered_number(op, a, v)
        if isinstance(a, (int, float)) and isinstance(v, (int, float)):
            return _ordered_number(op, a, v)
        return False
    if not isinstance(a, str) or not isinstance(v, str):
        return False
    if op == "like":
        return like(a, v)
    if op == "not-like":
        return not like(a, v)
    if op == "begins-with":
        return fold(a).startswith(fold(v))
    if op == "not-begin-with":
        return not fold(a).startswith(fold(v))
    if op == "ends-with":
        return fold(a).endswith(fold(v))
    if op == "not-end-with":
        return not fold(a).endswith(fold(v))
    raise ValueError(f"unknown operator {op!r}")


def _values(v: object) -> list[object]:
    return v if isinstance(v, list) else []


def _ordered_text(op: str, x: str, y: str) -> bool:
    if op == "gt":
        return x > y
    if op == "ge":
        return x >= y
    if op == "lt":
        return x < y
    return x <= y


def _ordered_number(op: str, x: float, y: float) -> bool:
    if op == "gt":
        return x > y
    if op == "ge":
        return x >= y
    if op == "lt":
        return x < y
    return x <= y


def compiled(op: str, v: object) -> Callable[[object], bool]:
    """``compare(op, ·, v)`` with the operand's work (folding, pattern compiling) done once: what
    the hot paths evaluate per record. Same answers as ``compare``."""
    if op in ("in", "not-in") and isinstance(v, list):
        texts = frozenset(fold(x) for x in v if isinstance(x, str))
        others = [x for x in v if not isinstance(x, str)]

        def hit(a: object) -> bool:
            if isinstance(a, str):
                return fold(a) in texts
            return any(_same(a, x) for x in others)

    elif op in ("null", "not-null", "gt", "ge", "lt", "le", "in", "not-in") or not isinstance(v, str):
        return lambda a: compare(op, a, v)
    elif op in ("eq", "ne"):
        w = fold(v)

        def hit(a: object) -> bool:
            return isinstance(a, str) and fold(a) == w

    elif op in ("like", "not-like"):
        matcher = like_matcher(v)

        def hit(a: object) -> bool:
            return isinstance(a, str) and matcher(fold(a))

    elif op in ("begins-with", "not-begin-with"):
        w = fold(v)

        def hit(a: object) -> bool:
            return isinstance(a, str) and fold(a).startswith(w)

    else:
        w = fold(v)

        def hit(a: object) -> bool:
            return isinstance(a, str) and fold(a).endswith(w)

    if op in ("eq", "in", "like", "begins-with", "ends-with"):
        return hit
    # Negations are false on a missing value, and on a value of another type only when the
    # positive form could not apply (jsonb-typed: "ne" holds for a number vs a string operand).
    if op in ("not-like", "not-begin-with", "not-end-with"):
        return lambda a: isinstance(a, str) and not hit(a)
    return lambda a: a is not None and not hit(a)
