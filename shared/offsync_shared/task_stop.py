"""Stopping background tasks that may lose a cancellation: our own loops (relays, watches) and
aiokafka's fetcher (``consumer_stop``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_tasks(tasks: list[asyncio.Task[Any]], *, rounds: int = 10) -> None:
    """Cancel ``tasks`` and wait until they end. Cancels again each second: on Python 3.11 a
    cancellation that meets an inner future completing inside ``asyncio.wait_for`` can be lost,
    and a loop task (relay, broker watch) then runs on and a plain gather waits for ever (seen
    as a test teardown that never ended). Gives up, logging, after ``rounds`` seconds."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            return
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
    if pending:
        log.warning("tasks did not stop after cancellation", extra={"tasks": sorted(t.get_name() for t in pending)})
