"""The operator vocabulary: the linear-time like matcher against a regex reference, case folding,
``compiled`` agreeing with ``compare`` on every operator, and the table's shape."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offsync_shared.domain import operators as ops
from offsync_shared.domain.attributes import ATTRIBUTE_TYPES


def like_reference(value: str, pattern: str) -> bool:
    """The naive meaning of like (a backtracking regex; fine for short inputs)."""
    out = []
    for k, run in enumerate(ops.like_parts(pattern)):
        if k:
            out.append(".*")
        out += ["." if t is None else re.escape(ops.fold(t)) for t in run]
    return re.fullmatch("".join(out), ops.fold(value), re.DOTALL) is not None


ALPHABET = "aAbB%_\\ÉéİiΣσ"


@settings(max_examples=2000, deadline=None)
@given(st.text(ALPHABET, max_size=12), st.text(ALPHABET, max_size=8))
def test_like_matches_the_regex_reference(value: str, pattern: str) -> None:
    assert ops.like(value, pattern) == like_reference(value, pattern)


LIKE_TABLE = [
    ("Contoso Ltd", "con%", True),
    ("Contoso Ltd", "%LTD", True),
    ("Contoso", "c_ntoso", True),
    ("Contoso", "c_ntos", False),
    ("50%", "50\\%", True),
    ("500", "50\\%", False),
    ("a\\", "a\\", True),  # a trailing backslash is literal
    ("a_b", "a\\_b", True),
    ("axb", "a\\_b", False),
    ("École", "école", True),
    ("", "%", True),
    ("", "_", False),
]


@pytest.mark.parametrize("value,pattern,expected", LIKE_TABLE, ids=[f"{v!r}~{p!r}" for v, p, _ in LIKE_TABLE])
def test_like_table(value: str, pattern: str, expected: bool) -> None:
    assert ops.like(value, pattern) is expected


def test_like_is_linear_where_a_backtracking_matcher_explodes() -> None:
    value = "a" * 20_000 + "b"
    pattern = "%a%a%a%a%a%a%a%a%a%a%c"
    t0 = time.perf_counter()
    assert not ops.like(value, pattern)
    assert not ops.like(value, "%" + "_" * 50 + "c%")
    assert time.perf_counter() - t0 < 1.0


def test_like_sql_pattern_escapes_what_sql_would_read_as_wildcards() -> None:
    assert ops.like_sql_pattern("50\\%_x%") == "50\\%_x%"
    assert ops.like_sql_pattern("a\\") == "a\\\\"  # trailing backslash: a literal one
    assert ops.like_sql_pattern("\\a") == "a"


@pytest.mark.parametrize(
    "s,folded",
    [("Contoso", "contoso"), ("ÉCOLE", "école"), ("İstanbul", "istanbul"), ("ΟΔΟΣ", "οδοσ"), ("ß", "ß")],
)
def test_fold_is_per_character_simple_lower_case(s: str, folded: str) -> None:
    assert ops.fold(s) == folded


VALUES: list[Any] = [None, "Contoso", "contoso", "CON", "École", "", 0, 1, 1.5, True, False, [1], {"x": 1}]
OPERANDS: list[Any] = ["contoso", "con%", "CON", "école", "", 1, 1.0, True, ["CONTOSO", 1], [], ["x"]]


@pytest.mark.parametrize("op", sorted(ops.STATIC_OPERATORS))
def test_compiled_agrees_with_compare(op: str) -> None:
    for v in OPERANDS:
        if op in ("in", "not-in") and not isinstance(v, list):
            continue
        test = ops.compiled(op, v)
        for a in VALUES:
            assert test(a) == ops.compare(op, a, v), (op, a, v)


def test_string_operators_ignore_case() -> None:
    """Bug #14.5."""
    assert ops.compare("eq", "Contoso", "contoso")
    assert ops.compare("begins-with", "Contoso", "con")
    assert ops.compare("ends-with", "Contoso", "OSO")
    assert ops.compare("in", "Contoso", ["CONTOSO"])
    assert not ops.compare("ne", "Contoso", "CONTOSO")
    assert ops.compare("gt", "b", "A")


def test_operator_table_shape() -> None:
    for name, spec in ops.OPERATORS.items():
        assert set(spec.types) <= set(ATTRIBUTE_TYPES), name
        assert spec.value in ("typed", "list", "text", "none"), name
        assert spec.user_context == (name not in ops.STATIC_OPERATORS)
    assert "datetime" in ops.OPERATORS["in"].types  # bug #14.4
