"""The CLI as a field worker meets it, offline: `list | head` ends quietly, a cut-short `list`
says so, every command has help, a rejected change's reason is shown and conflicts can be
cleared, and a device that is not signed in says how to sign in."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from offsync_device.cli import build_parser, main
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p


def _store_with_accounts(path: Path, n: int) -> None:
    s = LocalStore(path)
    s.apply_ops([(i + 1, "b", "put", "account", f"a{i:05d}", 1, {"name": f"Account {i}"}) for i in range(n)])
    s.close()


def test_list_into_head_ends_without_a_broken_pipe(tmp_path: Path) -> None:
    db = tmp_path / "d.sqlite"
    _store_with_accounts(db, 3000)
    cmd = f"{sys.executable} -m offsync_device.cli --store {db} list account --limit 3000 | head -n 2"
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.stdout.count("\n") == 2
    assert "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc


def test_a_cut_short_list_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "d.sqlite"
    _store_with_accounts(db, 7)
    assert main(["--store", str(db), "list", "account", "--limit", "5"]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 5 and "showing 5 of 7 account records; use --limit 7" in out.err
    assert main(["--store", str(db), "list", "account"]) == 0
    assert "showing" not in capsys.readouterr().err


def test_every_command_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001 - argparse exposes no other way
    assert sub.choices
    helps = {a.dest: a.help for a in sub._choices_actions}  # noqa: SLF001
    for name, cmd in sub.choices.items():
        assert helps.get(name), f"{name} has no help line"
        assert cmd.description, f"{name} has no description"
        for action in cmd._actions:  # noqa: SLF001
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"


@pytest.mark.parametrize(
    "cmd", ["login", "logout", "sync", "list", "show", "create", "edit", "delete", "pending", "conflicts", "status"]
)
def test_help_runs_for_every_command(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([cmd, "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.strip()


def test_rejections_show_the_server_reason_and_can_be_cleared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "d.sqlite"
    s = LocalStore(db)
    s.apply_ops([(1, "b", "put", "account", "a1", 1, {"name": "Contoso"})])
    s.delete("account", "a1")
    batch = s.next_batch(10)
    assert batch is not None
    reason = "no delete privilege on account at this depth"
    s.apply_result(
        p.Result(
            batch.batch_id,
            (p.ChangeResult(batch.changes[0].seq, "account", "a1", "rejected", code="forbidden", message=reason),),
        )
    )
    s.close()
    assert main(["--store", str(db), "conflicts"]) == 0
    assert f"rejected account a1 (forbidden: {reason})" in capsys.readouterr().out
    assert main(["--store", str(db), "conflicts", "--clear", "other-id"]) == 0
    assert "cleared 0 entries" in capsys.readouterr().out
    assert main(["--store", str(db), "conflicts", "--clear"]) == 0
    assert "cleared 1 entry" in capsys.readouterr().out
    assert main(["--store", str(db), "conflicts"]) == 0 and capsys.readouterr().out == ""


def test_sync_before_signing_in_says_how(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", str(tmp_path / "d.sqlite"), "sync"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "offsync-device login --url" in err
