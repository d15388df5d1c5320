"""Settings come from the environment and refuse unsafe defaults outside dev."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from offsync_shared.settings import CommonSettings, settings_error

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


def test_a_bad_variable_ends_the_process_with_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSYNC_SYNC_PORT", "eighty")
    monkeypatch.setenv("OFFSYNC_PG_POOL_MAX", "-")
    with pytest.raises(SystemExit) as ended:
        CommonSettings.from_env()
    lines = str(ended.value.code).splitlines()
    assert lines[0] == "offsync: the settings in the environment are not valid:"
    assert sorted(line.split(":")[0].strip() for line in lines[1:]) == [
        "OFFSYNC_PG_POOL_MAX=-",
        "OFFSYNC_SYNC_PORT=eighty",
    ]
    assert "Traceback" not in str(ended.value.code)


def test_a_rule_over_fields_keeps_its_own_sentence_and_never_echoes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSYNC_ENV", "prod")
    monkeypatch.setenv("OFFSYNC_JWT_SECRET", "short-but-secret")
    with pytest.raises(SystemExit) as ended:
        CommonSettings.from_env()
    text = str(ended.value.code)
    assert "OFFSYNC_JWT_SECRET is not fit for OFFSYNC_ENV=prod" in text
    assert "short-but-secret" not in text


def test_a_dsn_is_named_but_not_echoed() -> None:
    with pytest.raises(ValidationError) as caught:
        CommonSettings(pg_dsn=["postgresql://u:hunter2@db/offsync"])
    text = settings_error(caught.value, "OFFSYNC_")
    assert "OFFSYNC_PG_DSN=(hidden)" in text
    assert "hunter2" not in text
