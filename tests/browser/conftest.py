"""Browser tests get the ``stack`` fixture without pytest-asyncio: Playwright's sync API holds
the main thread's event loop for the whole session, so an async module fixture could not be torn
down while the browser lives. Same stack: the four services as processes, fresh database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from offsync_stack.infra import Infra
from offsync_stack.testing import Stack, make_env, start_stack


@pytest.fixture(scope="module")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ThreadPoolExecutor(1) as pool:
        env = pool.submit(asyncio.run, make_env(infra, "console")).result()
    s = start_stack(env, tmp_path_factory.mktemp("console-logs"))
    try:
        yield s
    finally:
        s.group.stop_all()
        infra.release_topics(env.topic_prefix)
