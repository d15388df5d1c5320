"""Headless Chromium for browser tests: Playwright driving the system's Chromium.

Playwright's own browser download cannot work offline, so the tests drive the Chromium that the
machine's package manager installed (``chromium`` on PATH, or ``OFFSYNC_CHROMIUM``). A test that
needs a browser asks for the ``browser`` fixture (one Chromium per test module) and opens its own
context, so cookies, storage and offline state never leak between tests.

Playwright's sync API holds the main thread's event loop while it runs, so no pytest-asyncio test
can run beside it: the fixture lives for one module only, and the browser tests run last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when the machine has none."""
    return os.environ.get("OFFSYNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run after every other test (stable order otherwise): see the module's note."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (a Playwright ``Browser``) per test module; tests open their own contexts."""
    exe = chromium_path()
    if exe is None:
        pytest.fail("no Chromium on this machine: `apt-get install chromium` (make browser-deps does it)")
    from playwright.sync_api import sync_playwright

    # Playwright launches with a fresh temporary profile (user-data dir) of its own.
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()
