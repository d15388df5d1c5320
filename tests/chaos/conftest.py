"""The chaos suite runs only when asked for (``make test-chaos`` = ``pytest tests/chaos -m chaos``):
it owns its own PostgreSQL and broker and takes minutes, so a plain ``pytest`` skips it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "chaos" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="chaos suite: run with -m chaos (make test-chaos)")
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(skip)
