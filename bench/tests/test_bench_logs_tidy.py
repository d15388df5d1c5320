"""A bench run's service logs go when it finished cleanly; they stay when there is something to read."""

from __future__ import annotations

from pathlib import Path

import pytest

from offsync_bench.context import _tidy_logs

WARNING = '{"ts":"t","level":"WARNING","service":"sync-service","msg":"topics created below their definition"}\n'
ERROR = '{"ts":"t","level":"ERROR","service":"publish-service","msg":"apply failed"}\n'


def _logs(tmp_path: Path, *lines: str) -> Path:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "sync-service.log").write_text(WARNING)
    (log_dir / "publish-service.log").write_text("".join(lines))
    return log_dir


def test_a_clean_run_leaves_nothing_behind(tmp_path: Path) -> None:
    log_dir = _logs(tmp_path, WARNING)
    _tidy_logs(log_dir, finished=True)
    assert not log_dir.exists()


@pytest.mark.parametrize("line", [ERROR, "Traceback (most recent call last):\n"])
def test_an_error_keeps_the_logs_and_says_where(tmp_path: Path, line: str, capsys: pytest.CaptureFixture[str]) -> None:
    log_dir = _logs(tmp_path, line)
    _tidy_logs(log_dir, finished=True)
    assert log_dir.exists()
    assert str(log_dir) in capsys.readouterr().out


def test_a_run_that_failed_keeps_the_logs(tmp_path: Path) -> None:
    log_dir = _logs(tmp_path, WARNING)
    _tidy_logs(log_dir, finished=False)
    assert log_dir.exists()
