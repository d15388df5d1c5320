"""Stopping an aiokafka consumer without hanging on its fetcher.

aiokafka 0.14's ``Consumer.stop()`` cancels the fetcher's task once and waits for it. When the
assignment has just changed (a metadata answer from a broker that had not heard of a new topic
yet), that task is itself cancelling its pending requests inside
``contextlib.suppress(CancelledError)``, which swallows our cancel too; the task then waits for
the next assignment for ever, and so does ``stop()``. On a three-broker Apache Kafka cluster that
hung sync-service's start-up: its group-less consumer found the topics, lost them on the next
metadata answer, and its start's clean-up never returned. A second cancel lands outside that
block and ends the task, so the task is ended first with :func:`stop_tasks` (which cancels
again until it ends), and ``stop()`` then finds it done.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer

from offsync_shared.task_stop import stop_tasks


def _fetch_task(consumer: AIOKafkaConsumer) -> asyncio.Task[object] | None:
    fetcher = getattr(consumer, "_fetcher", None)  # private: the task stop() waits for
    task = getattr(fetcher, "_fetch_task", None)
    return task if isinstance(task, asyncio.Task) else None


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    task = _fetch_task(consumer)
    if task is not None:
        await stop_tasks([task])
    await consumer.stop()
