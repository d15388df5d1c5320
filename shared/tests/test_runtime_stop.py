"""stop_tasks: a background loop that lost one cancellation is cancelled again, so a service's
shutdown (or a test's teardown) ends instead of waiting for ever."""

from __future__ import annotations

import asyncio

from offsync_shared.task_stop import stop_tasks


async def test_a_task_that_lost_a_cancellation_is_stopped() -> None:
    swallowed = 0

    async def stubborn_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a cancellation lost inside wait_for looks like to the loop

    task = asyncio.create_task(stubborn_loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_tasks([task]), 5)
    assert task.cancelled() and swallowed == 1


async def test_finished_tasks_are_left_alone() -> None:
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await stop_tasks([task])
    assert task.result() == 1
