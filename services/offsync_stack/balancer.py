"""HAProxy (Debian's ``haproxy`` package, ``make lb-deps``) in front of several device gateways on
loopback: websockets pass through, a gateway that stops answering /readyz is taken out within a
second, and a device whose gateway died reconnects through the same address to another one."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from offsync_stack.embedded import free_port, wait_port


def config(port: int, backends: list[int]) -> str:
    servers = "".join(
        f"    server gw{i + 1} 127.0.0.1:{p} check inter 500ms fall 2 rise 1\n" for i, p in enumerate(backends)
    )
    return (
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 60s\n"
        "    timeout server 60s\n"
        # A device's websocket lives long; the gateway pings it, so this only ends dead tunnels.
        "    timeout tunnel 1h\n"
        "    option redispatch\n"
        "    retries 3\n"
        "frontend devices\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend gateways\n"
        "backend gateways\n"
        "    balance roundrobin\n"
        "    option httpchk GET /readyz\n" + servers
    )


@dataclass
class Balancer:
    root: Path
    backends: list[int]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/sync"

    def start(self, timeout: float = 15.0) -> None:
        binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if binary is None:
            raise RuntimeError("haproxy is not installed: make lb-deps (Debian package haproxy)")
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "haproxy.cfg"
        cfg.write_text(config(self.port, self.backends))
        log = open(self.root / "haproxy.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_port("127.0.0.1", self.port, timeout, self.proc)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
