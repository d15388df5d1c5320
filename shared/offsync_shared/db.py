"""Postgres access: the asyncpg pool (JSON codecs via orjson) and per-service schema migrations.

Each service owns one schema and is its only writer; migrations are plain SQL files applied in
name order under an advisory lock, recorded in ``<schema>.schema_migrations``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import orjson

log = logging.getLogger(__name__)

T = TypeVar("T")

# The database (or the socket to it) is away: restarting, refusing, or out of connections. What
# callers do about it differs (retry a batch, answer 503), so each adds its own cases to these.
# A shutdown terminates the sessions it finds busy (class 57P01/57P02): a query running at that
# moment fails with those, not with a connection error. A statement sent on a session the server
# has just terminated, before asyncpg noticed the socket close, fails with asyncpg's
# InternalClientError ("cannot switch to state ...": test_ops_transaction.py).
DATABASE_AWAY: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InternalClientError,
)

RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0


async def while_away(
    attempt: Callable[[], Awaitable[T]], transient: tuple[type[BaseException], ...] = DATABASE_AWAY, *, what: str
) -> T:
    """Run ``attempt`` until it ends other than by a ``transient`` failure, backing off between
    tries. Workers wrap every database step of an event in this: a failure that says nothing
    about the event must never reach the dead letters (the event would be lost)."""
    delay = RETRY_FIRST_S
    while True:
        try:
            return await attempt()
        except transient as exc:
            log.warning(
                "database unavailable; retrying",
                extra={"what": what, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay},
            )
            await asyncio.sleep(delay)  # backoff while the database recovers
            delay = min(delay * 2, RETRY_MAX_S)


# Every array type our statements bind or read, but text[] (asyncpg knows it). asyncpg learns an
# array type's codec by querying the catalog the first time a statement on that connection uses
# it: three round trips and a recursive query, ~3-4 ms, which landed in the first changes a
# fresh connection carried (the first live change after a publish took 38-41 ms, five such
# lookups across the services; docs/performance.md, "Round twelve").
_ARRAY_TYPES = ("bigint", "int", "bool", "bytea", "timestamptz", "jsonb")
_LEARN_ARRAY_CODECS = "SELECT " + ", ".join(f"${n}::{t}[]" for n, t in enumerate(_ARRAY_TYPES, 1))


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )
    # Learned once here, as the connection opens, instead of inside some change's transaction.
    await conn.prepare(_LEARN_ARRAY_CODECS)


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's ``reset``: release a connection without asyncpg's reset query (``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``), one more round trip at every
    release, i.e. per request and per consumer batch. Our code leaves no session state on a
    pooled connection: advisory locks are transaction-scoped, settings are ``SET LOCAL``, a
    listener removes itself (``remove_listener`` unlistens); asyncpg still rolls back a
    transaction left open."""


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, name: str | None = None, **kw: Any
) -> asyncpg.Pool:
    """``name``: the connections' ``application_name``, so ``pg_stat_activity`` (and the server's
    log, with ``%a`` in its prefix) says which service holds each one."""
    kw.setdefault("reset", keep_session)
    if name is not None:
        kw["server_settings"] = {**kw.get("server_settings", {}), "application_name": name}
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection, **kw)
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


def _migration_files(package: str) -> list[tuple[str, str]]:
    root = resources.files(package)
    files = sorted((p.name, p.read_text()) for p in root.iterdir() if p.name.endswith(".sql"))
    return files


async def migrate(pool: asyncpg.Pool, schema: str, package: str) -> list[str]:
    """Apply the SQL files of ``package`` (a package holding NNN_name.sql files) to ``schema``.

    Returns the names applied now. Safe to run from several processes at once.
    """
    applied: list[str] = []
    async with pool.acquire() as conn:
        async with conn.transaction():
            # One lock per schema: concurrent starters wait instead of racing DDL.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')}
            for name, sql in _migration_files(package):
                if name in done:
                    continue
                await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                await conn.execute(sql)
                await conn.execute(f'INSERT INTO "{schema}".schema_migrations(name) VALUES ($1)', name)
                applied.append(name)
    if applied:
        log.info("migrations applied", extra={"schema": schema, "migrations": applied})
    return applied
