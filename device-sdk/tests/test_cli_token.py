"""The CLI takes its device id from the token it logs in with (the server refuses any other)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offsync_device.cli import main, token_device_id
from offsync_shared.auth import DEVICE_AUDIENCE, issue_token

SECRET = "s" * 40


@pytest.mark.parametrize(
    "token, expected",
    [
        (issue_token(SECRET, "u", DEVICE_AUDIENCE, device_id="phone-1"), "phone-1"),
        (issue_token(SECRET, "u", DEVICE_AUDIENCE), None),
        ("not-a-jwt", None),
        ("a.b!!.c", None),
    ],
    ids=["with-did", "without-did", "garbage", "bad-base64"],
)
def test_token_device_id(token: str, expected: str | None) -> None:
    assert token_device_id(token) == expected


def test_login_adopts_the_token_device_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "d.sqlite")
    tok = issue_token(SECRET, "u", DEVICE_AUDIENCE, device_id="tablet-7")
    assert main(["--store", store, "login", "--url", "ws://x/v1/sync", "--token", tok]) in (0, None)
    assert "device id tablet-7" in capsys.readouterr().out


def test_offline_edits_before_the_first_login_go_with_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "d.sqlite")
    main(["--store", store, "create", "account", "name=Northwind"])
    tok = issue_token(SECRET, "u", DEVICE_AUDIENCE, device_id="laptop")
    assert main(["--store", store, "login", "--url", "ws://x/v1/sync", "--token", tok]) in (0, None)
    main(["--store", store, "pending"])
    out = capsys.readouterr().out
    assert "device id laptop" in out and "Northwind" in out


def test_a_store_that_synced_stays_with_its_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "d.sqlite")
    main(
        [
            "--store",
            store,
            "login",
            "--url",
            "ws://x/v1/sync",
            "--token",
            issue_token(SECRET, "u", DEVICE_AUDIENCE, device_id="laptop"),
        ]
    )
    main(["--store", store, "create", "account", "name=Northwind"])
    code = main(
        [
            "--store",
            store,
            "login",
            "--url",
            "ws://x/v1/sync",
            "--token",
            issue_token(SECRET, "u", DEVICE_AUDIENCE, device_id="phone"),
        ]
    )
    assert code == 1 and "belongs to device laptop" in capsys.readouterr().err
