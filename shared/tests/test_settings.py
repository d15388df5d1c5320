"""Settings come from the environment and refuse unsafe defaults outside dev."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offsync_shared.settings import CommonSettings


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSYNC_KAFKA_BOOTSTRAP", "k:1")
    monkeypatch.setenv("OFFSYNC_SYNC_PORT", "9999")
    s = CommonSettings()
    assert (s.kafka_bootstrap, s.sync_port) == ("k:1", 9999)


def test_prod_refuses_dev_secret() -> None:
    with pytest.raises(ValidationError, match="OFFSYNC_JWT_SECRET"):
        CommonSettings(env="prod")
    assert CommonSettings(env="prod", jwt_secret="p" * 32).env == "prod"


def test_short_secret_refused() -> None:
    with pytest.raises(ValidationError, match="32"):
        CommonSettings(jwt_secret="short")
