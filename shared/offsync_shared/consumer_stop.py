"""Stopping an aiokafka consumer without hanging on its fetcher.

aiokafka 0.14's ``Consumer.stop()`` cancels the fetcher's task once and waits for it. When the
assignment has just changed (a metadata answer from a broker that had not heard of a new topic
yet), that task is itself cancelling its pending requests inside
``contextlib.suppress(CancelledError)``, which swallows our cancel too; the task then waits for
the next assignment for ever, and so does ``stop()``. On a three-broker Apache Kafka cluster that
hung sync-service's start-up: its group-less consumer found the topics, lost them on the next
metadata answer, and its start's clean-up never returned. A second cancel lands outside that
block and ends the task, so we repeat the cancel until ``stop()`` is through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)

# A fetcher's task that takes its cancel ends within a few ms; cancelling a task that is already
# ending again is harmless (its own clean-up runs in Consumer.stop(), not in that task).
RECANCEL_AFTER_S = 0.5


async def stop_insisting(
    stop: Awaitable[None], stuck: Callable[[], asyncio.Task[object] | None], every_s: float = RECANCEL_AFTER_S
) -> int:
    """Awaits ``stop``; each ``every_s`` it is not done, cancels the task ``stuck`` returns (if it
    is still running) again. Returns how many extra cancels it took."""
    stopping = asyncio.ensure_future(stop)
    extra = 0
    while True:
        done, _ = await asyncio.wait({stopping}, timeout=every_s)
        if done:
            stopping.result()
            return extra
        task = stuck()
        if task is not None and not task.done():
            task.cancel()
            extra += 1


def _fetch_task(consumer: AIOKafkaConsumer) -> asyncio.Task[object] | None:
    fetcher = getattr(consumer, "_fetcher", None)  # private: the task stop() waits for
    task = getattr(fetcher, "_fetch_task", None)
    return task if isinstance(task, asyncio.Task) else None


async def stop_consumer(consumer: AIOKafkaConsumer, name: str) -> None:
    extra = await stop_insisting(consumer.stop(), lambda: _fetch_task(consumer))
    if extra:
        log.warning(
            "consumer's fetcher ignored the stop's cancel: cancelled it again",
            extra={"consumer": name, "extra_cancels": extra},
        )
