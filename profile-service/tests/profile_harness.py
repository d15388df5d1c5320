"""profile-service under test: the app running in-process (lifespan included) on a fresh database
and topic prefix of the real PostgreSQL and broker. (A named module, not conftest, so that test
modules can import it without colliding with other services' conftest files.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
from offsync_shared.envelope import Envelope
from offsync_shared.topics import ADMIN
from offsync_stack.testing import InfraEnv
from profile_service.settings import Settings


@dataclass
class Service:
    app: FastAPI
    settings: Settings
    env: InfraEnv

    def token(self, user_id: str = BOOTSTRAP_ADMIN_USER_ID, audience: str = ADMIN_AUDIENCE, **kw: Any) -> str:
        return issue_token(self.settings.jwt_secret, user_id, audience, **kw)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://profile", headers=headers
        )

    async def admin_events(self) -> list[Envelope]:
        """Everything on the admin topic so far, read straight from the broker (no consumer group)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.env.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            topic = ADMIN.full(self.env.topic_prefix)
            parts = [
                TopicPartition(topic, p)
                for p in (consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
            ]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            out: list[Envelope] = []
            while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(*parts, timeout_ms=500)
                for records in batch.values():
                    out += [Envelope.decode(r.value) for r in records]
            return out
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh consumer has no metadata yet
    return consumer.partitions_for_topic(topic) or {0}
