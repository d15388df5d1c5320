"""Where the infrastructure for tests and tools comes from, chosen once per session:

1. existing services, when ``OFFSYNC_TEST_PG_DSN`` / ``OFFSYNC_TEST_KAFKA_BOOTSTRAP`` are set
   (each independently; e.g. the system PostgreSQL with the embedded broker);
2. ``OFFSYNC_TEST_BROKER=kafka``: a local Apache Kafka cluster of ``OFFSYNC_TEST_KAFKA_BROKERS``
   (default 3) KRaft nodes, fetched through Maven (``make test-kafka``; offsync_stack.kafka);
3. testcontainers (PostgreSQL + Apache Kafka), only when a Docker engine answers;
4. otherwise the embedded PostgreSQL and the embedded Tansu broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from offsync_stack.embedded import EMBEDDED_BROKER_ENV, EmbeddedBroker, EmbeddedPostgres, rmtree
from offsync_stack.kafka import KafkaCluster


@dataclass
class Infra:
    pg_server_dsn: str  # DSN of a database we may CREATE DATABASE from
    kafka_bootstrap: str
    backend: str
    _dbs: list[str] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    pg: EmbeddedPostgres | None = None
    kafka: KafkaCluster | None = None
    # OFFSYNC_* settings the services need on this broker (timeouts, replication factor).
    broker_env: dict[str, str] = field(default_factory=dict)

    def database_dsn(self, name: str) -> str:
        parts = urlsplit(self.pg_server_dsn)
        return urlunsplit(parts._replace(path=f"/{name}"))

    async def create_database(self, prefix: str = "t", template: str | None = None) -> str:
        """A fresh database, empty or a file copy of ``template`` (which must have no open
        connection); dropped when the session ends."""
        import asyncpg

        name = f"offsync_{prefix}_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.pg_server_dsn)
        try:
            copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{copy}')
        finally:
            await conn.close()
        self._dbs.append(name)
        return self.database_dsn(name)

    def release_topics(self, prefix: str) -> None:
        """A test env's topics are done with: on the local Apache Kafka cluster they are deleted
        (each node would keep a replica of every one until the session ends). The embedded broker
        is thrown away whole; brokers given from outside are left as they are."""
        if self.kafka is not None:
            self.kafka.drop_topics(prefix)


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def provide(durable: bool = True) -> Iterator[Infra]:
    """Infrastructure from OFFSYNC_TEST_*, containers or embedded servers. ``durable=False`` (the
    test suite only) runs an embedded PostgreSQL without fsync: its databases are thrown away."""
    pg_dsn = os.environ.get("OFFSYNC_TEST_PG_DSN")
    bootstrap = os.environ.get("OFFSYNC_TEST_KAFKA_BOOTSTRAP")
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="offsync-test-"))
        stack.callback(rmtree, root)
        backends = []
        pg = broker = kafka = None
        broker_env: dict[str, str] = {}
        if not bootstrap and os.environ.get("OFFSYNC_TEST_BROKER") == "kafka":
            kafka = KafkaCluster(root / "kafka", size=int(os.environ.get("OFFSYNC_TEST_KAFKA_BROKERS", "3")))
            stack.callback(kafka.stop)
            kafka.start()
            bootstrap = kafka.bootstrap
            broker_env = kafka.service_env()
            backends.append(f"kafka:apache-{kafka.size}")
        use_docker = (
            (not pg_dsn or not bootstrap)
            and os.environ.get("OFFSYNC_TEST_BACKEND") != "embedded"
            and docker_engine_answers()
        )
        if not pg_dsn:
            if use_docker:
                from testcontainers.postgres import PostgresContainer

                c = stack.enter_context(PostgresContainer("postgres:16-alpine"))
                pg_dsn = c.get_connection_url().replace("postgresql+psycopg2", "postgresql")
                backends.append("pg:testcontainers")
            else:
                pg = EmbeddedPostgres(root / "pg", durable=durable)
                pg.start()
                stack.callback(pg.stop)
                pg_dsn = pg.dsn("postgres")
                backends.append("pg:embedded")
        else:
            backends.append("pg:env")
        if not bootstrap:
            if use_docker:
                from testcontainers.kafka import KafkaContainer

                k = stack.enter_context(KafkaContainer().with_kraft())
                bootstrap = k.get_bootstrap_server()
                backends.append("kafka:testcontainers")
            else:
                broker = EmbeddedBroker(root / "broker")
                broker.start()
                stack.callback(broker.stop)
                bootstrap = broker.bootstrap
                broker_env = dict(EMBEDDED_BROKER_ENV)
                backends.append("kafka:embedded")
        elif kafka is None:
            backends.append("kafka:env")
        infra = Infra(
            pg_server_dsn=pg_dsn,
            kafka_bootstrap=bootstrap,
            backend=",".join(backends),
            broker=broker,
            pg=pg,
            kafka=kafka,
            broker_env=broker_env,
        )
        try:
            yield infra
        finally:
            if infra._dbs and not pg:  # an embedded server is thrown away whole
                _drop_databases(pg_dsn, infra._dbs)


def _drop_databases(dsn: str, names: list[str]) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for n in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        asyncio.run(drop())
    except Exception:  # cleanup is best effort; a leftover test database harms nothing
        pass
