"""db.while_away: a database away is waited out (a shutdown's terminated session included);
any other failure is the caller's at once."""

from __future__ import annotations

import asyncpg
import pytest

from offsync_shared import db

AWAY = [
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.CrashShutdownError("terminating connection because of crash of another server process"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    ConnectionRefusedError(111, "refused"),
    FileNotFoundError(2, "no socket"),
]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "RETRY_FIRST_S", 0.0)


@pytest.mark.parametrize("exc", AWAY, ids=lambda e: type(e).__name__)
async def test_away_is_retried_until_it_answers(exc: BaseException) -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise exc
        return "done"

    assert await db.while_away(attempt, what="test") == "done"
    assert calls == 3


@pytest.mark.parametrize(
    "exc",
    [asyncpg.UniqueViolationError("dup"), asyncpg.QueryCanceledError("timeout"), ValueError("poison")],
    ids=lambda e: type(e).__name__,
)
async def test_other_failures_are_raised_at_once(exc: BaseException) -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise exc

    with pytest.raises(type(exc)):
        await db.while_away(attempt, what="test")
    assert calls == 1
