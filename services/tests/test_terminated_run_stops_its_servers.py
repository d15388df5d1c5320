"""A test run ended by SIGTERM (a CI job's time limit, ``timeout``, a closed terminal) stops the
embedded PostgreSQL and broker it started. They run in sessions of their own (a Ctrl-C in the
terminal must not kill them under a test), so nothing else ends them: each such run left a
PostgreSQL and a Tansu behind (five pairs here, from runs ended by ``timeout``). Under xdist a
worker still tearing down when its controller's exit timeout runs out is SIGKILLed; its servers
then end with it (offsync_stack.owner)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from offsync_stack.testing import until

_WAITING_TEST = """
import pathlib
import signal


def test_waits_for_its_end(infra):
    pathlib.Path({marker!r}).write_text(infra.pg_server_dsn + "\\n" + infra.kafka_bootstrap)
    signal.pause()
"""


def _servers_on(ports: list[str]) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [
        line for line in out.splitlines() if ("postgres" in line or "tansu" in line) and any(p in line for p in ports)
    ]


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["one-process", "xdist"])
def test_a_run_ended_by_sigterm_stops_the_servers_it_started(tmp_path: Path, workers: list[str]) -> None:
    marker = tmp_path / "servers"
    test_file = tmp_path / "test_waiting.py"
    test_file.write_text(_WAITING_TEST.format(marker=str(marker)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFSYNC_TEST_")}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "offsync_stack.testing",
            "-q",
            "-p",
            "no:cacheprovider",
            *workers,
            str(test_file),
        ],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def started() -> list[str] | None:
            assert run.poll() is None, run.communicate()[0].decode()  # the run ended before its test waited
            return marker.read_text().splitlines() if marker.exists() else None

        dsn, bootstrap = until(started, timeout=120, message="the run's servers started")
        ports = [f"-p {urlparse(dsn).port} ", bootstrap.rsplit(":", 1)[1]]
        assert len(_servers_on(ports)) == 2
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0].decode()
    finally:
        if run.poll() is None:
            run.kill()
    # A worker's own teardown stops them; one its controller killed first takes them along
    # (offsync_stack.owner): either way within moments of the run's end.
    until(
        lambda: not _servers_on(ports) or None, timeout=30, message=f"the run's servers stopped; its output:\n{output}"
    )
