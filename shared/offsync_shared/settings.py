"""Settings common to every service; each service subclasses with its own env prefix fields.

Every address and secret comes from the environment (``OFFSYNC_...``) so the same code runs on
the embedded stack, on system services or on remote ones.
"""

from __future__ import annotations

from typing import Literal, Self, TypedDict

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offsync_shared.secret_strength import MIN_LENGTH, is_loopback, weakness

DEV_JWT_SECRET = "offsync-dev-secret-change-me-0123456789"


class ConsumerTuning(TypedDict):
    """A consumer's group and fetch timeouts for this broker (bus.ConsumerConfig keywords)."""

    session_timeout_ms: int
    heartbeat_interval_ms: int
    fetch_max_wait_ms: int
    fetch_idle_wait_ms: int | None


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
    # On such a broker, the wait a consumer stretches to at rest (None: a fixed wait, as on
    # Kafka). The first record after a quiet spell waits up to this per consumer hop
    # (shared/offsync_shared/fetch_wait.py; docs/performance.md, live_after_idle).
    kafka_fetch_idle_wait_ms: int | None = None
    # On such a broker: consumers pause at rest instead of holding fetches, and every producer
    # rings a doorbell (PostgreSQL NOTIFY) after a send, which wakes them (offsync_shared.doorbell;
    # docs/performance.md, "Idle CPU"). Needs kafka_fetch_idle_wait_ms.
    kafka_doorbell: bool = False
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
    # A listening socket inherited from the process that started this one (offsync_stack.processes
    # binds the port first), used instead of host and port: nothing can take the port meanwhile.
    listen_fd: int | None = None
    # A client must send a request's head (line + headers) within this many seconds of its first
    # byte, and may fall silent mid-body for at most this long (docs/security.md, limits).
    http_header_timeout_s: float = 10.0
    http_body_idle_timeout_s: float = 30.0
    pg_pool_min: int = 1
    pg_pool_max: int = 10
    # Each service's HTTP port (health, metrics, and its API if it has one).
    profile_port: int = 8100
    conflict_port: int = 8200
    sync_port: int = 8300
    publish_port: int = 8400

    @classmethod
    def from_env(cls) -> Self:
        """These settings from the environment; a bad value ends the process with one line per
        variable at fault (its name, what it holds, what it should be), not a traceback."""
        try:
            return cls()
        except ValidationError as exc:
            raise SystemExit(settings_error(exc, cls.model_config.get("env_prefix", ""))) from None

    def consumer_tuning(self) -> ConsumerTuning:
        """ConsumerConfig keyword arguments for this broker's group and fetch timeouts."""
        return ConsumerTuning(
            session_timeout_ms=self.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=self.kafka_fetch_max_wait_ms,
            fetch_idle_wait_ms=self.kafka_fetch_idle_wait_ms,
        )

    def exposure_warning(self) -> str | None:
        """A loud warning when this process would listen beyond loopback while signing with the
        dev secret (anyone who can reach it can mint an admin token), else None."""
        if self.jwt_secret.strip() == DEV_JWT_SECRET and not is_loopback(self.host):
            return (
                f"OFFSYNC_HOST={self.host} is reachable from other machines, but tokens are signed with the "
                "PUBLIC DEVELOPMENT SECRET: anyone who can reach this port can sign an admin token. "
                "Set OFFSYNC_JWT_SECRET (see docs/security.md) or bind 127.0.0.1."
            )
        return None

    @model_validator(mode="after")
    def _refuse_weak_secret_in_prod(self) -> CommonSettings:
        if self.env == "prod":
            why = weakness(self.jwt_secret, DEV_JWT_SECRET)
            if why is not None:
                raise ValueError(
                    f"OFFSYNC_JWT_SECRET is not fit for OFFSYNC_ENV=prod: {why}; "
                    "generate one with `openssl rand -base64 48` (docs/security.md)"
                )
        if len(self.jwt_secret) < MIN_LENGTH:
            raise ValueError(f"OFFSYNC_JWT_SECRET must be at least {MIN_LENGTH} characters")
        return self


_SECRET_WORDS = ("secret", "password", "dsn", "token", "key")


def settings_error(exc: ValidationError, env_prefix: str) -> str:
    """A settings failure as the operator reads it: the environment variable, the value it holds
    and what was expected. A rule over several fields (the JWT secret's) already names its
    variable in its message."""
    lines = ["offsync: the settings in the environment are not valid:"]
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
            # A secret or a DSN (which may carry a password) is never echoed into the logs.
            shown = "(hidden)" if any(word in field for word in _SECRET_WORDS) else str(error["input"])
            lines.append(f"  {env_prefix}{field.upper()}={shown}: {message}")
        else:
            lines.append(f"  {message}")
    return "\n".join(lines)
