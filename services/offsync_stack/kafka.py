"""Apache Kafka on this machine: fetches the pinned release through Maven (``deploy/kafka/pom.xml``)
into a cache outside the repository, formats KRaft storage and runs N combined broker+controller
nodes on loopback ports, each a child process with its own data directory, stopped cleanly.

Needs Java 17+ and Maven on PATH. The jars land in ``$OFFSYNC_KAFKA_CACHE`` (default
``~/.cache/offsync/kafka-<version>/libs``); nothing is written into the repository.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from offsync_stack.embedded import free_port, wait_port
from offsync_stack.owner import ends_with_owner

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"

# Consumer-group and fetch timings for a real Kafka: it answers a held fetch as soon as data
# arrives, so the fetch wait is no latency floor; a short session timeout lets a killed
# worker's partitions move within seconds (the broker's minimum is 6 s by default; the test
# cluster lowers it, see KafkaCluster.node_properties).
T = TypeVar("T")

KAFKA_ENV = {
    "OFFSYNC_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "OFFSYNC_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    "OFFSYNC_KAFKA_FETCH_MAX_WAIT_MS": "100",
    "OFFSYNC_PUBLISH_FETCH_WAIT_MS": "100",
    "OFFSYNC_SYNC_NOTIFY_FETCH_WAIT_MS": "100",
    # A replicated Kafka keeps what it acknowledged: no window to replay.
    "OFFSYNC_OUTBOX_RETENTION_S": "0",
}


def _run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs an admin coroutine from synchronous code, also when the caller is itself inside an
    event loop (the bench's async context starts the cluster), on a thread of its own then."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or Maven could not fetch the pinned release."""


def pinned_version(pom: Path = POM) -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if m is None:
        raise KafkaUnavailable(f"no <kafka.version> in {pom}")
    return m.group(1).strip()


def cache_dir(version: str) -> Path:
    base = os.environ.get("OFFSYNC_KAFKA_CACHE") or str(Path.home() / ".cache" / "offsync")
    return Path(base) / f"kafka-{version}"


def java_major(java: str = "java") -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if m is None:
        raise KafkaUnavailable(f"cannot read the Java version from: {out[:200]}")
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def fetch(pom: Path = POM) -> Path:
    """The directory holding the pinned Kafka's jars, fetched with Maven when not cached yet."""
    version = pinned_version(pom)
    libs = cache_dir(version) / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    if shutil.which("java") is None or shutil.which("mvn") is None:
        raise KafkaUnavailable("Apache Kafka needs Java 17+ and Maven on PATH (Debian: openjdk-17-jre-headless maven)")
    if java_major() < 17:
        raise KafkaUnavailable("Apache Kafka 4 needs Java 17 or newer")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    r = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise KafkaUnavailable(f"mvn could not fetch Apache Kafka {version}:\n{(r.stdout + r.stderr)[-3000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    done.write_text(version)
    return libs


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting with
    "-" (the storage tool would read it as an option, as Kafka's own generator also avoids)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def node_properties(
    node_id: int,
    port: int,
    controller_port: int,
    voters: str,
    data_dir: Path,
    replication: int,
    min_insync: int,
) -> str:
    """server.properties of one combined broker+controller node."""
    props = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "auto.create.topics.enable": "false",
        "default.replication.factor": replication,
        "min.insync.replicas": min_insync,
        "offsets.topic.replication.factor": replication,
        # Fewer internal partitions than the default 50: less to elect and replicate on 2 cores.
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_insync,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_insync,
        "group.initial.rebalance.delay.ms": 0,
        # Lets consumers use short session timeouts, so a killed worker's partitions move fast.
        "group.consumer.min.session.timeout.ms": 2000,
        "group.min.session.timeout.ms": 2000,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.replica.fetchers": 1,
        "background.threads": 2,
        "log.cleaner.threads": 1,
        "num.recovery.threads.per.data.dir": 1,
        # A dead broker's replicas leave the ISR in seconds, not the default 30 s.
        "replica.lag.time.max.ms": 5000,
        "controlled.shutdown.enable": "true",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "kafka.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


@dataclass
class KafkaCluster:
    """``size`` combined broker+controller nodes on 127.0.0.1; topics default to replication
    ``min(3, size)`` and ``min.insync.replicas`` ``min(2, size)``."""

    root: Path
    size: int = 1
    # Every node holds a replica of every partition, ~80 KB of heap each: at 256 MB a suite's
    # worth of topics (2,000 partitions) filled the old generation and full GCs ran back to back.
    heap_mb: int = 512
    libs: Path | None = None
    nodes: list[KafkaNode] = field(default_factory=list)
    id: str = field(default_factory=cluster_id)

    @property
    def replication(self) -> int:
        return min(3, self.size)

    @property
    def min_insync(self) -> int:
        return min(2, self.size)

    def service_env(self) -> dict[str, str]:
        """The OFFSYNC_* settings services need on this cluster."""
        return {**KAFKA_ENV, "OFFSYNC_TOPIC_REPLICATION_FACTOR": str(self.replication)}

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _java(self, main: str, *args: str, heap_mb: int) -> list[str]:
        assert self.libs is not None
        return [
            "java",
            f"-Xms{min(64, heap_mb)}m",
            f"-Xmx{heap_mb}m",
            # One GC thread and no JIT tiering beyond C1: two cores are shared by everyone.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:CICompilerCount=1",
            "-Xss512k",
            # Out of heap, a node stops at once (and says so in its log) instead of limping on.
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 120.0) -> None:
        if self.libs is None:
            self.libs = fetch()
        if not self.nodes:
            self.root.mkdir(parents=True, exist_ok=True)
            self.nodes = [
                KafkaNode(i + 1, free_port(), free_port(), self.root / f"node{i + 1}") for i in range(self.size)
            ]
            voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
            for n in self.nodes:
                n.root.mkdir(parents=True, exist_ok=True)
                n.config.write_text(
                    node_properties(
                        n.node_id,
                        n.port,
                        n.controller_port,
                        voters,
                        n.data_dir,
                        self.replication,
                        self.min_insync,
                    )
                )
                subprocess.run(
                    self._java(
                        "kafka.tools.StorageTool",
                        *("format", "-t", self.id, "-c", str(n.config), "--ignore-formatted"),
                        heap_mb=128,
                    ),
                    check=True,
                    capture_output=True,
                )
        for n in self.nodes:
            self.start_node(n.node_id, wait=False)
        for n in self.nodes:
            wait_port("127.0.0.1", n.port, timeout, n.proc)
        self.wait_brokers(timeout)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start_node(self, node_id: int, wait: bool = True, timeout: float = 120.0) -> None:
        n = self.node(node_id)
        if n.running:
            return
        log = open(n.log_path, "ab")
        n.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(n.config), heap_mb=self.heap_mb),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=ends_with_owner(signal.SIGTERM),
        )
        if wait:
            wait_port("127.0.0.1", n.port, timeout, n.proc)
            self.wait_brokers(timeout)

    def stop_node(self, node_id: int, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """SIGTERM is Kafka's controlled shutdown (leaders move away first); SIGKILL is a crash."""
        n = self.node(node_id)
        if not n.running:
            return
        assert n.proc is not None
        n.proc.send_signal(sig)
        try:
            n.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait()
        n.proc = None

    def kill_node(self, node_id: int) -> None:
        self.stop_node(node_id, signal.SIGKILL)

    def revive(self, timeout: float = 120.0) -> list[str]:
        """Starts every node that is not running although the cluster was started, and returns,
        for each, why it had stopped: its exit status and the end of its log."""
        reports = []
        for n in self.nodes:
            if n.proc is None or n.running:
                continue
            reports.append(
                f"Kafka node {n.node_id} exited with status {n.proc.returncode}; its log ends:\n{n.log_tail()}"
            )
            n.proc = None
            self.start_node(n.node_id, timeout=timeout)
        return reports

    def drop_topics(self, prefix: str) -> None:
        """Deletes the topics named ``prefix``*: a test's topics would otherwise stay for the
        session, and every node keeps a replica of each."""
        _run(lambda: self._drop_topics(prefix))

    async def _drop_topics(self, prefix: str) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30000)
        try:
            await admin.start()
            names = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    def wait_brokers(self, timeout: float = 120.0) -> None:
        """Until every running node is registered as a broker in the cluster metadata."""
        want = {n.node_id for n in self.nodes if n.running}
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                have = _run(self._broker_ids)
                if want <= have:
                    return
                last = have
            except Exception as exc:  # noqa: BLE001 - not up yet; reported at the deadline
                last = exc
            time.sleep(0.2)  # polling a starting cluster; bounded by the deadline
        raise TimeoutError(f"Kafka brokers {sorted(want)} not all registered after {timeout}s (last: {last!r})")

    async def _broker_ids(self) -> set[int]:
        from aiokafka.admin import AIOKafkaAdminClient

        running = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.running)
        admin = AIOKafkaAdminClient(bootstrap_servers=running, request_timeout_ms=3000)
        try:
            await admin.start()
            meta = await admin.describe_cluster()
            return {int(b["node_id"]) for b in meta["brokers"]}
        finally:
            await admin.close()

    def wait_in_sync(self, timeout: float = 120.0) -> None:
        """Until every partition of every topic has all its replicas in sync (a rolling restart
        takes the next node down only then, or partitions would drop below min.insync)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                behind = _run(self._under_replicated)
                if not behind:
                    return
                last = behind[:5]
            except Exception as exc:  # noqa: BLE001 - a node still starting; reported at the deadline
                last = exc
            time.sleep(0.2)  # polling replication catching up; bounded by the deadline
        raise TimeoutError(f"partitions still under-replicated after {timeout}s: {last!r}")

    async def _under_replicated(self) -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        running = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes if n.running)
        admin = AIOKafkaAdminClient(bootstrap_servers=running, request_timeout_ms=3000)
        try:
            await admin.start()
            topics = await admin.describe_topics()
        finally:
            await admin.close()
        return [
            f"{t['topic']}/{p['partition']}"
            for t in topics
            for p in t["partitions"]
            if set(p["isr"]) != set(p["replicas"])
        ]

    def active_controller(self) -> int:
        """The node id of the KRaft quorum's leader (the active controller), as the running nodes
        last recorded it (a broker's metadata answer names a random broker, not the controller)."""
        best: tuple[int, int] | None = None
        for n in self.nodes:
            if not n.running:
                continue
            state = n.data_dir / "__cluster_metadata-0" / "quorum-state"
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            leader, epoch = int(data.get("leaderId", -1)), int(data.get("leaderEpoch", -1))
            if leader >= 0 and (best is None or epoch > best[1]):
                best = (leader, epoch)
        if best is None:
            raise RuntimeError("no running node knows the quorum leader")
        return best[0]

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to every node at once (stopping them one by one, the last would wait for a
        controller quorum that is gone), SIGKILL whatever is still running after ``timeout``."""
        running = [n for n in self.nodes if n.running]
        for n in running:
            assert n.proc is not None
            n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in running:
            assert n.proc is not None
            try:
                n.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                n.proc.kill()
                n.proc.wait()
            n.proc = None
