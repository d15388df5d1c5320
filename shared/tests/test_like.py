"""The linear-time LIKE matcher agrees with a regex reference on tables and on generated
patterns and values."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offsync_shared.like import compile_like, like


def reference(value: str, pattern: str) -> bool:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL) is not None


ROWS = [
    ("exact", "abc", "abc", True),
    ("exact-longer", "abcd", "abc", False),
    ("empty-empty", "", "", True),
    ("percent-empty", "", "%", True),
    ("prefix", "abcdef", "abc%", True),
    ("suffix", "abcdef", "%def", True),
    ("infix", "xxfooxxbarxx", "%foo%bar%", True),
    ("infix-order", "xxbarxxfooxx", "%foo%bar%", False),
    ("overlap-head-tail", "ab", "a%b", True),
    ("overlap-no-room", "a", "a%a", False),
    ("underscore", "abc", "a_c", True),
    ("underscore-count", "abbc", "a_c", False),
    ("underscore-in-middle", "xx1-2yy", "%1_2%", True),
    ("escaped-percent", "100%", "100\\%", True),
    ("escaped-percent-literal", "1000", "100\\%", False),
    ("escaped-underscore", "a_b", "a\\_b", True),
    ("trailing-backslash", "a\\", "a\\", True),
    ("newline", "a\nb", "a%b", True),
    ("double-percent", "ab", "a%%b", True),
]


@pytest.mark.parametrize(("value", "pattern", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_table(value: str, pattern: str, expected: bool) -> None:
    assert like(value, pattern) is expected
    assert reference(value, pattern) is expected


alphabet = st.sampled_from("ab%_\\")


@settings(max_examples=400, deadline=None)
@given(value=st.text(alphabet="ab_%\\", max_size=10), pattern=st.text(alphabet=alphabet, max_size=8))
def test_agrees_with_regex(value: str, pattern: str) -> None:
    assert like(value, pattern) == reference(value, pattern)


def test_compiled_patterns_are_cached() -> None:
    assert compile_like("%foo%bar%") is compile_like("%foo%bar%")
