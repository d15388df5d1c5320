"""docs/errors.md documents every stable code: each OffsyncError's code with its HTTP status, each
websocket close code with its name, and each error-frame code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from offsync_shared import errors
from offsync_shared import protocol as p

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _rows() -> list[list[str]]:
    """The cells of every table row in docs/errors.md, backticks stripped."""
    rows = []
    for line in DOC.read_text().splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\-\s]+", line):
            rows.append([c.strip().replace("`", "") for c in line.strip("|").split("|")])
    return rows


ERROR_CLASSES = sorted(
    (c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.OffsyncError)),
    key=lambda c: c.status,
)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.code)
def test_every_http_error_code_is_documented_with_its_status(cls: type[errors.OffsyncError]) -> None:
    wanted = [str(cls.status), cls.code + (" (retriable)" if cls.retriable else "")]
    assert any(row[:2] == wanted for row in _rows()), f"docs/errors.md has no row | {' | '.join(wanted)} |"


@pytest.mark.parametrize("code", sorted(p.CLOSE_CODES), ids=str)
def test_every_close_code_is_documented_with_its_name(code: int) -> None:
    wanted = [str(code), p.CLOSE_CODES[code]]
    assert any(row[:2] == wanted for row in _rows()), f"docs/errors.md has no row | {' | '.join(wanted)} |"


@pytest.mark.parametrize("code", p.ERROR_CODES)
def test_every_error_frame_code_is_documented(code: str) -> None:
    wanted = code + (" (retriable)" if code in p.RETRIABLE else "")
    assert any(row[0] == wanted for row in _rows()), f"docs/errors.md has no row | {wanted} |"


def test_close_code_constants_are_all_named() -> None:
    """A CLOSE_* constant missing from CLOSE_CODES would escape the checks above."""
    constants = {v for k, v in vars(p).items() if k.startswith("CLOSE_") and isinstance(v, int)}
    assert constants == set(p.CLOSE_CODES)
