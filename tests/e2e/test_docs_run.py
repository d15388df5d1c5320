"""Docs that run: every ```sh block of README.md and docs/*.md is executed with bash against a
running stack, from a folder laid out like a checkout after `make up` (``.offsync/stack.json``,
``.venv``), and must exit 0. A block that cannot run here (it starts the stack itself, needs
remote services) says so on the line above it: ``<!-- docs-test: skip (why) -->``.

The blocks of one document run as one script, like a reader's terminal; documents run in
DOC_ORDER first (a later one continues from an earlier one's example), then the rest by name."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.settings import DEV_JWT_SECRET
from offsync_stack.testing import TEST_ADMIN_PASSWORD, Stack, profiles_materialized

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOC_ORDER = ["docs/admin-api.md", "README.md"]
SKIP = "<!-- docs-test: skip"
_FENCE = re.compile(r"^```(\S*)\s*$")


def shell_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, body, skipped) of every ```sh / ```bash block in a Markdown text."""
    lines = text.splitlines()
    blocks: list[tuple[int, str, bool]] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        if m.group(1) in ("sh", "bash", "shell"):
            skipped = i > 0 and lines[i - 1].startswith(SKIP)
            blocks.append((i + 1, "\n".join(lines[i + 1 : end]), skipped))
        i = end + 1
    return blocks


def documents() -> list[str]:
    found = sorted(str(p.relative_to(REPO)) for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    return [d for d in DOC_ORDER if d in found] + [d for d in found if d not in DOC_ORDER]


def test_blocks_are_found_and_skips_are_marked() -> None:
    """The extraction itself: the known examples are found, and the README's make commands are skipped."""
    readme = shell_blocks((REPO / "README.md").read_text())
    assert any("offsync-device" in body and not skipped for _, body, skipped in readme)
    assert all(skipped for _, body, skipped in readme if body.lstrip().startswith("make "))
    assert any(not skipped for _, _, skipped in shell_blocks((REPO / "docs/admin-api.md").read_text()))


async def _after_admin_api(stack: Stack) -> None:
    # A reader whose first `sync` is refused with no_profile runs it again; the test waits instead.
    await profiles_materialized(stack, "ana", timeout=30)


# What a reader would wait for between two documents, before the next one's example.
AFTER: dict[str, Callable[[Stack], Awaitable[None]]] = {"docs/admin-api.md": _after_admin_api}


async def test_docs_examples_run_against_a_stack(stack: Stack, tmp_path: Path) -> None:
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    assert not missing, f"the docs' examples need {missing} (make docs-deps installs them)"
    (tmp_path / ".offsync").mkdir()
    (tmp_path / ".offsync" / "stack.json").write_text(
        json.dumps(
            {
                "admin_api": stack.admin_url,
                "records_api": stack.records_url,
                "device_ws": stack.sync_ws,
                "admin_token": issue_token(DEV_JWT_SECRET, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE),
                "admin_username": "admin",
                "admin_password": TEST_ADMIN_PASSWORD,
            }
        )
    )
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    ran = 0
    for doc in documents():
        blocks = [(line, body) for line, body, skipped in shell_blocks((REPO / doc).read_text()) if not skipped]
        if not blocks:
            continue
        script = "set -euo pipefail\n" + "\n".join(f"# {doc}:{line}\n{body}" for line, body in blocks)
        proc = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", script],
            cwd=tmp_path,
            env={**os.environ, "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, (
            f"{doc}: its examples failed (exit {proc.returncode})\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
        ran += len(blocks)
        if doc in AFTER:
            await AFTER[doc](stack)
    assert ran >= 2
