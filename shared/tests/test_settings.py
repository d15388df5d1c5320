"""Settings come from the environment and refuse unsafe defaults outside dev."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offsync_shared.settings import CommonSettings

GOOD = "q7Vd0Lk2xR9mZ1bT4nW8cY3hJ6fP5sAe"  # 32 characters as `openssl rand -base64 24` makes them


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSYNC_KAFKA_BOOTSTRAP", "k:1")
    monkeypatch.setenv("OFFSYNC_SYNC_PORT", "9999")
    s = CommonSettings()
    assert (s.kafka_bootstrap, s.sync_port) == ("k:1", 9999)


def test_prod_refuses_dev_secret() -> None:
    with pytest.raises(ValidationError, match="OFFSYNC_JWT_SECRET"):
        CommonSettings(env="prod")
    assert CommonSettings(env="prod", jwt_secret=GOOD).env == "prod"


def test_short_secret_refused() -> None:
    with pytest.raises(ValidationError, match="32"):
        CommonSettings(jwt_secret="short")


def test_exposure_warning_only_for_the_dev_secret_beyond_loopback() -> None:
    assert CommonSettings(host="127.0.0.1").exposure_warning() is None
    assert CommonSettings(host="::1").exposure_warning() is None
    assert "PUBLIC DEVELOPMENT SECRET" in (CommonSettings(host="0.0.0.0").exposure_warning() or "")
    assert CommonSettings(host="0.0.0.0", jwt_secret=GOOD).exposure_warning() is None
