"""A server started by a process that is then killed outright (SIGKILL: no handler, no teardown)
stops by itself: it runs in a session of its own, so before this nothing ended it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from offsync_stack.owner import ends_with_owner
from offsync_stack.testing import until

_OWNER = """
import os, signal, sys
from pathlib import Path
from offsync_stack.embedded import EmbeddedBroker, free_port

broker = EmbeddedBroker(Path(sys.argv[1]), free_port())
broker.start()
print(broker.proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_broker_ends_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    owner = subprocess.run(
        [sys.executable, "-c", _OWNER, str(tmp_path / "broker")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    pid = int(owner.stdout.split()[0])
    until(lambda: not _alive(pid) or None, timeout=20, message=f"broker {pid} ended with its owner")


def test_only_the_main_thread_arms_it() -> None:
    """The signal follows the thread that started the child: a worker thread may end first."""
    assert ends_with_owner(signal.SIGTERM) is not None
    seen: list[object] = []
    worker = threading.Thread(target=lambda: seen.append(ends_with_owner(signal.SIGTERM)))
    worker.start()
    worker.join()
    assert seen == [None]
