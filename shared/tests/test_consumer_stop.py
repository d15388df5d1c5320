"""stop_consumer's mechanism: a task shaped like aiokafka's fetcher, which swallows cancels while
it cancels its own requests after an assignment change, is ended by stop_tasks, and the stop's
own cancel-and-wait (what Consumer.stop() does with it) then returns at once."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from offsync_shared.task_stop import stop_tasks


def _routine(swallow: int, started: asyncio.Event) -> asyncio.Task[None]:
    async def body() -> None:
        started.set()
        for _ in range(swallow):  # the shape of aiokafka's fetcher: a cancel lost in a suppress
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        await asyncio.Event().wait()  # then it waits for an assignment that never comes

    return asyncio.create_task(body())


async def _stop(task: asyncio.Task[None]) -> None:  # what Consumer.stop() does with its fetcher
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("swallow", [0, 1, 2])
async def test_a_fetcher_that_swallows_cancels_is_ended_before_the_stop_waits_for_it(swallow: int) -> None:
    started = asyncio.Event()
    task = _routine(swallow, started)
    await started.wait()
    await asyncio.wait_for(stop_tasks([task]), 10)
    assert task.done()
    await asyncio.wait_for(_stop(task), 1)
