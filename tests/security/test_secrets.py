"""Finding 1: the prod secret check accepted the Kubernetes manifest's placeholder, 32 equal
characters and the dev secret with a trailing space, and with any of them anyone can sign an
admin token for the fixed bootstrap admin id. Now prod refuses weak secrets, deploy/ ships no
usable secret, a non-loopback bind with the dev secret is shouted about, and stack.json (it
holds an admin token) is owner-only."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from offsync_shared.serve import warn_if_exposed
from offsync_shared.settings import DEV_JWT_SECRET, CommonSettings
from offsync_stack.__main__ import _write_private

ROOT = Path(__file__).resolve().parents[2]

WEAK = {
    "k8s-manifest-placeholder": "CHANGE-ME-TO-A-RANDOM-SECRET-OF-32-OR-MORE-CHARS",
    "32-equal-characters": "a" * 32,
    "dev-secret-trailing-space": DEV_JWT_SECRET + " ",
    "dev-secret": DEV_JWT_SECRET,
}


@pytest.mark.parametrize("secret", list(WEAK.values()), ids=list(WEAK))
def test_prod_refuses_weak_secrets(secret: str) -> None:
    with pytest.raises(ValidationError, match="OFFSYNC_JWT_SECRET is not fit for OFFSYNC_ENV=prod"):
        CommonSettings(env="prod", jwt_secret=secret)


def test_prod_accepts_a_random_secret() -> None:
    secret = "kT3vQ9pZ2mX7wL1cR8bN4yF6hJ0sDgAe+u5oIq=="
    assert CommonSettings(env="prod", jwt_secret=secret).jwt_secret == secret


def test_deploy_ships_no_usable_secret() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    values = re.findall(r"^\s*OFFSYNC_JWT_SECRET:\s*(.+)$", compose, re.MULTILINE)
    assert values and all(v.startswith("${OFFSYNC_JWT_SECRET:?") for v in values), values
    for path in (ROOT / "deploy").rglob("*"):
        if path.suffix in (".yaml", ".yml", ".json", ".env"):  # manifests, not the docs about them
            for line in path.read_text().splitlines():
                code = line.split("#", 1)[0]
                assert not re.search(r"OFFSYNC_JWT_SECRET\s*[:=]\s*\S", code), f"{path}: {line}"


def test_binding_beyond_loopback_with_the_dev_secret_is_shouted_about(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        warn_if_exposed(CommonSettings(host="0.0.0.0"))
    assert "SECURITY WARNING" in capsys.readouterr().err
    assert any("PUBLIC DEVELOPMENT SECRET" in r.getMessage() for r in caplog.records)
    caplog.clear()
    warn_if_exposed(CommonSettings(host="127.0.0.1"))
    warn_if_exposed(CommonSettings(host="0.0.0.0", jwt_secret="kT3vQ9pZ2mX7wL1cR8bN4yF6hJ0sDgAe+u5oIq=="))
    assert capsys.readouterr().err == "" and not caplog.records


def test_stack_json_is_written_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "stack.json"
    target.write_text("{}")
    target.chmod(0o644)  # left by an older version: the new file must not inherit this
    old = os.umask(0)
    try:
        _write_private(target, '{"admin_token": "t"}')
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_text() == '{"admin_token": "t"}'
