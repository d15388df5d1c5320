"""`make up` with a bad OFFSYNC_ variable says which one in a line and starts nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_bad_variable_stops_the_stack_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "OFFSYNC_PG_POOL_MAX": "ten"}
    env.pop("OFFSYNC_PG_DSN", None)
    done = subprocess.run(
        [sys.executable, "-m", "offsync_stack", "up", "--state-dir", str(tmp_path / "state")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "OFFSYNC_PG_POOL_MAX=ten: Input should be a valid integer" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert list((tmp_path / "state").iterdir()) == []  # no database, no broker, no logs
