"""Starts the four services as OS processes (one log file each), waits until each is ready,
and stops them all: SIGTERM first so they drain, SIGKILL after a grace period."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from offsync_stack.owner import ends_with_owner


class ServiceFailed(RuntimeError):
    """A service exited or never became ready while starting; the message carries its log's tail
    (which says why: a bad setting is one line there), so callers print it, not a traceback."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # e.g. "profile-service"
    module: str  # python -m <module>
    port_env: str  # env var carrying its HTTP port


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("profile-service", "profile_service", "OFFSYNC_PROFILE_PORT"),
    ServiceSpec("conflict-service", "conflict_service", "OFFSYNC_CONFLICT_PORT"),
    ServiceSpec("publish-service", "publish_service", "OFFSYNC_PUBLISH_PORT"),
    ServiceSpec("sync-service", "sync_service", "OFFSYNC_SYNC_PORT"),
)


@dataclass
class RunningService:
    spec: ServiceSpec
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _listening(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses its port
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


@dataclass
class ServiceGroup:
    """The service processes of one stack; ``env`` is the common environment they all get."""

    env: dict[str, str]
    log_dir: Path
    running: dict[str, RunningService] = field(default_factory=dict)

    def start(
        self, spec: ServiceSpec, port: int, extra_env: dict[str, str] | None = None, *, instance: str | None = None
    ) -> RunningService:
        """Starts one process of ``spec``; ``instance`` names a second process of the same service
        (e.g. ``sync-service-2``: scale-out), under which it is kept, logged and stopped."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, spec.port_env: str(port), **(extra_env or {})}
        name = instance or spec.name
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        # The port is bound here and the listening socket handed over (OFFSYNC_LISTEN_FD): while
        # the process imports (a second or two), nothing else can take the port, and the readiness
        # probe can only reach this process (a parallel test run once probed another's there).
        with _listening(env.get("OFFSYNC_HOST", "127.0.0.1"), port) as sock:
            proc = subprocess.Popen(
                [sys.executable, "-m", spec.module],
                env={**env, "OFFSYNC_LISTEN_FD": str(sock.fileno())},
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),),
                start_new_session=True,  # its own process group: we can signal it and its children
                preexec_fn=ends_with_owner(signal.SIGTERM),  # drains and exits if we die
            )
        svc = RunningService(spec, port, proc, log_path)
        self.running[name] = svc
        return svc

    def wait_ready(self, timeout: float = 60.0, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names or self.running)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                name = pending[0]
                svc = self.running[name]
                if svc.proc.poll() is not None:
                    tail = svc.log_path.read_text(errors="replace")[-3000:]
                    raise ServiceFailed(f"{name} exited with {svc.proc.returncode}; log tail:\n{tail}")
                try:
                    if client.get(f"{svc.url}/readyz").status_code == 200:
                        pending.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    tail = svc.log_path.read_text(errors="replace")[-3000:]
                    raise ServiceFailed(f"{name} not ready after {timeout}s; log tail:\n{tail}")
                time.sleep(0.1)  # polling readiness of a starting process; bounded by the deadline

    def stop(self, name: str, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        svc = self.running.pop(name, None)
        if svc is None or svc.proc.poll() is not None:
            return
        try:
            os.killpg(svc.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            svc.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait()

    def kill(self, name: str) -> None:
        self.stop(name, signal.SIGKILL, grace=5.0)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)
