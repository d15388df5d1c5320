"""Watches ``offsync.sync-notify.v1`` from a process of its own: every BucketsAdvanced event
(bucket -> newest op id, and the commit time publish-service stamped on those ops), which is
when an op became visible in the bucket store."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any


async def _serve(conn: Connection, bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from offsync_shared.envelope import Envelope

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: list[tuple[float, dict[str, int]]] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve "end" now: nothing committed after this is missed
        conn.send(("ready", len(tps)))
        loop = asyncio.get_running_loop()
        cmd_fut = loop.run_in_executor(None, conn.recv)
        while True:
            batch = await consumer.getmany(timeout_ms=50, max_records=5000)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        env = Envelope.decode(m.value)
                    except Exception:
                        continue
                    if env.type == "buckets.advanced":
                        events.append((float(env.payload["committed_at"]), dict(env.payload["buckets"])))
            if cmd_fut.done():
                cmd = cmd_fut.result()
                if cmd == "collect":
                    conn.send(("ok", list(events)))
                    cmd_fut = loop.run_in_executor(None, conn.recv)
                else:
                    conn.send(("ok", list(events)))
                    return
    finally:
        await consumer.stop()


def _main(conn: Connection, bootstrap: str, topic: str) -> None:
    asyncio.run(_serve(conn, bootstrap, topic))


class NotifyWatcher:
    def __init__(self, bootstrap: str, topic: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_main, args=(child, bootstrap, topic), daemon=True)
        self.proc.start()

    async def ready(self, timeout: float = 60.0) -> None:
        if not await asyncio.to_thread(self.conn.poll, timeout):
            raise TimeoutError("sync-notify watcher did not start")
        self.conn.recv()

    async def collect(self) -> list[tuple[float, dict[str, int]]]:
        await asyncio.to_thread(self.conn.send, "collect")
        return (await asyncio.to_thread(self.conn.recv))[1]

    async def stop(self) -> list[tuple[float, dict[str, int]]]:
        try:
            await asyncio.to_thread(self.conn.send, "stop")
            out: list[Any] = (await asyncio.to_thread(self.conn.recv))[1]
        finally:
            await asyncio.to_thread(self.proc.join, 10)
            if self.proc.is_alive():
                self.proc.kill()
        return out
