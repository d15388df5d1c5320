"""stop_insisting: a stop that waits for a task which swallowed its first cancel (as aiokafka's
fetcher does while it cancels its own requests after an assignment change) still ends."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from offsync_shared.consumer_stop import stop_insisting


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


async def test_a_task_that_takes_its_cancel_ends_without_another() -> None:
    started = asyncio.Event()
    task = _routine(0, started)
    await started.wait()
    assert await stop_insisting(_stop(task), lambda: task, every_s=0.05) == 0
    assert task.cancelled()


@pytest.mark.parametrize("swallow", [1, 3])
async def test_a_swallowed_cancel_is_repeated_until_the_stop_ends(swallow: int) -> None:
    started = asyncio.Event()
    task = _routine(swallow, started)
    await started.wait()
    extra = await asyncio.wait_for(stop_insisting(_stop(task), lambda: task, every_s=0.01), 10)
    assert extra == swallow
    assert task.done()


async def test_an_error_of_the_stop_is_raised() -> None:
    async def failing() -> None:
        raise RuntimeError("broker gone")

    with pytest.raises(RuntimeError, match="broker gone"):
        await stop_insisting(failing(), lambda: None, every_s=0.01)
