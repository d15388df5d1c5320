"""pytest plugin: real infrastructure for integration tests and a running stack for e2e tests.

Fixtures:
- ``infra``: session-wide PostgreSQL + Kafka-protocol broker (see offsync_stack.infra).
- ``fresh_env``: a fresh database and topic prefix -> the ``OFFSYNC_*`` env a service would get.
- ``stack``: the four services as OS processes on a fresh database and topic prefix (module scope).

A fixture that makes an env with ``make_env`` ends with ``release_env``: on the local Apache
Kafka cluster its topics are deleted then.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from hypothesis import settings as hypothesis_settings

from offsync_shared.events import Event, register
from offsync_stack.embedded import free_port
from offsync_stack.infra import Infra, provide
from offsync_stack.processes import SERVICES, ServiceGroup


@register
class Probe(Event):
    """A test-only event for bus, outbox and consumer tests on any topic."""

    TYPE = "test.probe"
    flag: bool = True


# Property tests: a developer's run draws new examples each time (and prints how to replay a failure);
# CI (.ci/run sets OFFSYNC_HYPOTHESIS_PROFILE=ci) runs the same examples every time, so its verdict
# never depends on the draw. Neither times examples: on a shared, noisy machine a deadline fails at
# random, and speed targets live in the benchmarks.
hypothesis_settings.register_profile("explore", deadline=None, print_blob=True)
hypothesis_settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("OFFSYNC_HYPOTHESIS_PROFILE", "explore"))

# The bootstrap admin's password on every test stack (username ``admin``); see offsync_stack.accounts.
TEST_ADMIN_PASSWORD = "offsync-test-admin-password"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--serial-tests",
        choices=("include", "exclude", "only"),
        default="include",
        help="tests marked `serial` (they cannot share the machine with other tests): run them with "
        "the rest (include, the default), leave them out (exclude: make test's parallel pass) or run "
        "only them (only: make test's serial pass).",
    )
    parser.addoption(
        "--serial-list",
        metavar="PATH",
        help="with --serial-tests=exclude: write the node ids of the selected tests left out as `serial` "
        "to PATH (empty when there are none), so make test runs its serial pass only when needed.",
    )


def _ended(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"ended by signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A run ended by SIGTERM (a CI job's time limit, ``timeout``, a closed terminal) unwinds as
    Ctrl-C does, so the session's fixtures stop the embedded PostgreSQL and broker they started:
    those run in sessions of their own and nothing else ends them. Without this, each such run
    left both behind (services/tests/test_terminated_run_stops_its_servers.py)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _ended)


@pytest.hookimpl(trylast=True)  # after -m / -k deselected theirs: the serial list holds only what was asked for
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``kafka`` need a local Apache Kafka cluster: they run in ``make test-kafka``
    (OFFSYNC_TEST_BROKER=kafka) and are skipped elsewhere. ``--serial-tests`` splits the suite in
    two for make test: a parallel pass without the ``serial`` tests, then a serial pass of them."""
    serial = config.getoption("serial_tests")
    if serial != "include":
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            (keep if (item.get_closest_marker("serial") is not None) == (serial == "only") else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
        listing = config.getoption("serial_list")
        if listing and serial == "exclude":
            # Every xdist worker collects the same items and writes the same list: replace, never append.
            path = Path(listing)
            tmp = path.with_name(f"{path.name}.{os.getpid()}")
            tmp.write_text("".join(f"{item.nodeid}\n" for item in drop))
            os.replace(tmp, path)
    if hasattr(config, "workerinput"):  # an xdist worker: its order is the order modules are handed out
        _slow_modules_first(items)
    if os.environ.get("OFFSYNC_TEST_BROKER") == "kafka":
        return
    skip = pytest.mark.skip(reason="needs Apache Kafka: make test-kafka")
    for item in items:
        if item.get_closest_marker("kafka") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _kafka_nodes_alive(request: pytest.FixtureRequest) -> None:
    """On the local Apache Kafka cluster, a node that stopped on its own is started again before
    the next test, and why it stopped is reported: one crash failed every later test (CI, 2026-12-08)."""
    if os.environ.get("OFFSYNC_TEST_BROKER") != "kafka" or "infra" not in request.fixturenames:
        return
    cluster = request.getfixturevalue("infra").kafka
    if cluster is not None:
        for report in cluster.revive():
            warnings.warn(report, stacklevel=1)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    # The suite's databases are disposable: durability traded for speed (docs/reliability.md).
    # Tests that crash PostgreSQL start their own durable server (tests/chaos).
    with provide(durable=False) as i:
        yield i


# Browser modules take longest per module, then process-level (e2e), then integration modules.
_SLOW_MARKERS = ("browser", "e2e", "integration")


def _slow_modules_first(items: list[pytest.Item]) -> None:
    """Whole modules in the order: browser, e2e, integration, the rest (each in collection order).

    With ``--dist loadscope --no-loadscope-reorder`` xdist hands modules to workers in this order,
    so the long ones start first and the many short unit modules fill the end evenly; in plain
    collection order (``tests/`` last) one worker ran the slow end alone for minutes. A module's
    items stay together, so its module-scoped fixtures start once."""

    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, m in enumerate(_SLOW_MARKERS) if item.get_closest_marker(m) is not None), len(_SLOW_MARKERS)
        )

    module_rank: dict[object, int] = {}
    for item in items:
        module_rank[item.path] = min(module_rank.get(item.path, len(_SLOW_MARKERS)), rank(item))
    order = {path: i for i, path in enumerate(module_rank)}
    items.sort(key=lambda item: (module_rank[item.path], order[item.path]))


@dataclass
class InfraEnv:
    pg_dsn: str
    kafka_bootstrap: str
    topic_prefix: str
    # OFFSYNC_* settings for this broker (offsync_stack.embedded.EMBEDDED_BROKER_ENV, or
    # offsync_stack.kafka.KafkaCluster.service_env()).
    broker_env: dict[str, str] = field(default_factory=dict)

    def as_env(self) -> dict[str, str]:
        return {
            "OFFSYNC_ENV": "test",
            "OFFSYNC_PG_DSN": self.pg_dsn,
            "OFFSYNC_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "OFFSYNC_TOPIC_PREFIX": self.topic_prefix,
            "OFFSYNC_TOPIC_PARTITIONS": "4",
            "OFFSYNC_BOOTSTRAP_ADMIN_PASSWORD": TEST_ADMIN_PASSWORD,
            **self.broker_env,
        }

    @property
    def group_timeouts(self) -> dict[str, Any]:  # Any: spread into ConsumerConfig(**...)
        """session/heartbeat/fetch timeouts for a consumer on this broker (ConsumerConfig kwargs)."""
        env = self.as_env()
        return {
            "session_timeout_ms": int(env.get("OFFSYNC_KAFKA_SESSION_TIMEOUT_MS", 10000)),
            "heartbeat_interval_ms": int(env.get("OFFSYNC_KAFKA_HEARTBEAT_INTERVAL_MS", 3000)),
            "fetch_max_wait_ms": int(env.get("OFFSYNC_KAFKA_FETCH_MAX_WAIT_MS", 50)),
        }

    def settings_kwargs(self) -> dict[str, Any]:  # Any: spread into Settings(**...)
        return {k.removeprefix("OFFSYNC_").lower(): v for k, v in self.as_env().items()}


async def make_env(infra: Infra, label: str = "t") -> InfraEnv:
    dsn = await infra.create_database(label)
    return InfraEnv(dsn, infra.kafka_bootstrap, f"{label}{uuid.uuid4().hex[:8]}.", dict(infra.broker_env))


async def release_env(infra: Infra, env: InfraEnv) -> None:
    """The end of an env made by ``make_env``: its topics are deleted on the local Kafka cluster."""
    await asyncio.to_thread(infra.release_topics, env.topic_prefix)


@pytest_asyncio.fixture
async def fresh_env(infra: Infra) -> AsyncIterator[InfraEnv]:
    env = await make_env(infra)
    yield env
    await release_env(infra, env)


@dataclass
class Stack:
    env: InfraEnv
    group: ServiceGroup

    def url(self, service: str) -> str:
        return self.group.running[service].url

    @property
    def admin_url(self) -> str:
        return self.url("profile-service")

    @property
    def records_url(self) -> str:
        return self.url("conflict-service")

    @property
    def sync_ws(self) -> str:
        return self.url("sync-service").replace("http://", "ws://") + "/v1/sync"


def start_stack(
    env: InfraEnv, log_dir: Path, services: tuple[str, ...] | None = None, extra_env: dict[str, str] | None = None
) -> Stack:
    # Every service learns every port (profile-service tells devices where the websocket is; the field
    # app on sync-service signs in on profile-service; the admin console calls the records API and
    # reads the gateway's and publisher's metrics).
    ports = {spec.name: free_port() for spec in SERVICES}
    group = ServiceGroup(
        env={
            **env.as_env(),
            "OFFSYNC_LOG_LEVEL": os.environ.get("OFFSYNC_TEST_LOG_LEVEL", "INFO"),
            **{spec.port_env: str(ports[spec.name]) for spec in SERVICES},
            **(extra_env or {}),
        },
        log_dir=log_dir,
    )
    for spec in SERVICES:
        if services is None or spec.name in services:
            group.start(spec, ports[spec.name])
    try:
        group.wait_ready(timeout=90)
    except BaseException:
        group.stop_all()
        raise
    return Stack(env, group)


@pytest_asyncio.fixture(scope="module")
async def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = await make_env(infra, "e2e")
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    s = await asyncio.to_thread(start_stack, env, log_dir)
    try:
        yield s
    finally:
        await asyncio.to_thread(s.group.stop_all)
        await release_env(infra, env)


async def eventually(check, timeout: float = 10.0, interval: float = 0.02, message: str = "condition"):
    """Wait until ``await check()`` returns a truthy value and return it; fail after ``timeout``.

    Tests wait on conditions with a deadline, never on a fixed sleep.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        last = await check()
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"{message} not reached within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def until(check, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    """:func:`eventually` for a plain ``check()`` (outside an event loop: a page, a process):
    its truthy value, or a failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout}s (last: {last!r})")
        time.sleep(interval)  # between polls of a condition with a deadline


async def _all_counted(stack: Stack, sql: str, ids: Sequence[str], timeout: float, message: str) -> None:
    """Wait until ``sql`` (a count over the text[] ``$1``) counts every distinct one of ``ids``."""

    async def all_there() -> bool:
        conn = await asyncpg.connect(stack.env.pg_dsn)
        try:
            n = await conn.fetchval(sql, list(ids))
        finally:
            await conn.close()
        return n == len(set(ids))

    await eventually(all_there, timeout=timeout, interval=0.2, message=message)


async def profiles_materialized(stack: Stack, *user_ids: str, timeout: float = 40.0) -> None:
    """Wait until publish-service has committed each user's published profile (their
    ``sync.user_profiles`` row): before that a device's sync is refused with 4004 no_profile,
    because publishing is asynchronous (slower on a replicated Kafka than on the embedded broker)."""
    await _all_counted(
        stack,
        "SELECT count(*) FROM sync.user_profiles WHERE user_id = ANY($1::text[])",
        user_ids,
        timeout,
        f"profiles of {', '.join(user_ids)} materialized",
    )


async def records_in_buckets(stack: Stack, record_ids: list[str], timeout: float = 40.0) -> None:
    """Wait until publish-service has put each record in a bucket: a record written after its
    profile's publish reaches the buckets through the records topic, and a device that syncs
    before then is caught up without it (later on a replicated Kafka)."""
    await _all_counted(
        stack,
        "SELECT count(DISTINCT record_id) FROM sync.bucket_ops WHERE record_id = ANY($1::text[]) AND op = 'put'",
        record_ids,
        timeout,
        f"{len(record_ids)} records in their buckets",
    )
