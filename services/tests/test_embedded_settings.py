"""Settings given to the embedded PostgreSQL come after its own options, so they win (PostgreSQL
takes the last ``-c`` for a name): a script measures the server at another shared_buffers
(bench/scripts/copy_growth.py prints the value the server reports). The stack gives none."""

from __future__ import annotations

from pathlib import Path

from offsync_stack.embedded import EmbeddedPostgres


def _settings(options: list[str]) -> list[str]:
    assert options[::2] == ["-c"] * (len(options) // 2), options  # nothing but -c name=value pairs
    return options[1::2]


def test_given_settings_come_last_and_the_others_stay() -> None:
    plain = _settings(EmbeddedPostgres(Path("/nowhere")).server_options())
    given = _settings(EmbeddedPostgres(Path("/nowhere"), settings=("shared_buffers=4GB",)).server_options())
    assert "shared_buffers=256MB" in plain and "io_method=sync" in plain
    assert given == [*plain, "shared_buffers=4GB"]


def test_a_disposable_server_trades_durability_first() -> None:
    options = _settings(EmbeddedPostgres(Path("/nowhere"), durable=False).server_options())
    assert options[:3] == ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
