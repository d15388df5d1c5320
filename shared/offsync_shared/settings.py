"""Settings common to every service; each service subclasses with its own env prefix fields.

Every address and secret comes from the environment (``OFFSYNC_...``) so the same code runs on
the embedded stack, on system services or on remote ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "offsync-dev-secret-change-me-0123456789"


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OFFSYNC_", extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    pg_dsn: str = "postgresql://postgres@127.0.0.1:5432/offsync"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Prepended to every topic name: isolates test sessions and tenants sharing one broker.
    topic_prefix: str = ""
    # Topics are created as shared/offsync_shared/topics.yaml defines them; these override every
    # topic's partition count / replication factor when set (tests use fewer partitions; a
    # cluster with fewer brokers than the definition's replicas gets as many as it has).
    topic_partitions: int | None = None
    topic_replication_factor: int | None = None
    # Consumer group liveness. Kafka's defaults; the embedded broker finishes a group join in
    # about half the session timeout, so the embedded stack and tests use 2000/500.
    kafka_session_timeout_ms: int = 10000
    kafka_heartbeat_interval_ms: int = 3000
    # How long a fetch may wait for data. Kafka answers a held fetch as soon as data arrives; the
    # embedded broker only when the wait runs out, so there every hop costs up to this much.
    kafka_fetch_max_wait_ms: int = 50
    # How long the outbox keeps a published event, to publish it again if the broker loses its
    # state (the embedded broker forgets everything on restart). 0 deletes at once (a replicated
    # Kafka keeps what it acknowledged). See docs/reliability.md.
    outbox_retention_s: float = 300.0
    # How often each service asks the broker whether it lost its topics or their logs.
    broker_watch_interval_s: float = 1.0
    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str = "offsync"
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    pg_pool_min: int = 1
    pg_pool_max: int = 10
    # Each service's HTTP port (health, metrics, and its API if it has one).
    profile_port: int = 8100
    conflict_port: int = 8200
    sync_port: int = 8300
    publish_port: int = 8400

    def consumer_tuning(self) -> dict[str, int]:
        """ConsumerConfig keyword arguments for this broker's group and fetch timeouts."""
        return {
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
            "fetch_max_wait_ms": self.kafka_fetch_max_wait_ms,
        }

    @model_validator(mode="after")
    def _refuse_dev_secret_in_prod(self) -> CommonSettings:
        if self.env == "prod" and self.jwt_secret == DEV_JWT_SECRET:
            raise ValueError("OFFSYNC_JWT_SECRET must be set to a real secret when OFFSYNC_ENV=prod")
        if len(self.jwt_secret) < 32:
            raise ValueError("OFFSYNC_JWT_SECRET must be at least 32 characters")
        return self
