"""`offsync-device`: a command-line device. Sign in with a username and password, sync with a
progress bar (or stay connected with `sync --watch`), and list/edit records offline; `pending`
and `conflicts` show what has not (or not cleanly) synced.

Every failure a person can meet is one sentence on stderr and a non-zero exit, never a
traceback. The access token is renewed silently; only a sign-in that ended (revoked, password
changed, unused for weeks) asks for `offsync-device login` again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import getpass
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from offsync_device.client import Device, SyncInterrupted, SyncRefused, SyncReport, describe_connect_failure
from offsync_device.fields import FieldError, parse
from offsync_device.local_store import LocalStore
from offsync_device.signin import Credentials, SignInError, SignInRequired
from offsync_shared import protocol as p

EXAMPLES = """examples:
  offsync-device login --url http://127.0.0.1:8100 --username ada
  offsync-device sync
  offsync-device list account --limit 20
  offsync-device create account name=Contoso employees=12
  offsync-device sync --watch
"""


class CliError(Exception):
    """A one-sentence failure for the person at the keyboard (exit code 1 unless given)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ProgressBar:
    def __init__(self, stream: Any = sys.stderr, width: int = 40) -> None:
        self.stream = stream
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        total = max(total, done, 1)
        filled = int(self.width * done / total)
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}")
        self.stream.flush()


def token_device_id(token: str) -> str | None:
    """The device id a token was issued for (its ``did`` claim), read without verifying: only the
    server can verify it, the device merely needs to present itself under the same id."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return None
    did = claims.get("did") if isinstance(claims, dict) else None
    return did if isinstance(did, str) and did else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="offsync-device",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--store", default=str(Path.home() / ".offsync-device.sqlite"), help="local SQLite store")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="command")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text)

    login = command("login", "sign this device in (username and password), or remember a device token")
    login.add_argument("--url", required=True, help="the server's address, e.g. http://host:8100 (ws://… with --token)")
    login.add_argument("--username", help="your Offsync username")
    login.add_argument("--password", help="your password (prompted for when omitted)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--token", help="a device token minted by an admin, instead of a username")
    login.add_argument("--sync-url", help="the device websocket, when the server cannot tell (behind a proxy)")
    command("logout", "sign this device out on the server and forget its tokens")
    sync = command("sync", "upload pending changes, then download until caught up")
    sync.add_argument("--watch", action="store_true", help="stay connected and print live changes until Ctrl-C")
    ls = command("list", "records of an entity as seen offline")
    ls.add_argument("entity", help="entity logical name, e.g. account")
    ls.add_argument("--limit", type=int, default=50, help="show at most this many (default 50)")
    show = command("show", "one record as seen offline")
    show.add_argument("entity", help="entity logical name")
    show.add_argument("id", help="record id")
    create = command("create", "create a record offline: create account name=Contoso employees=12")
    create.add_argument("entity", help="entity logical name")
    create.add_argument("fields", nargs="*", help="name=value pairs, typed by the entity's attributes")
    edit = command("edit", "edit a record offline: edit account <id> name=New")
    edit.add_argument("entity", help="entity logical name")
    edit.add_argument("id", help="record id")
    edit.add_argument("fields", nargs="+", help="name=value pairs (an empty value clears the attribute)")
    delete = command("delete", "delete a record offline")
    delete.add_argument("entity", help="entity logical name")
    delete.add_argument("id", help="record id")
    command("pending", "offline changes not yet acknowledged by the server")
    conflicts = command("conflicts", "changes the server resolved as conflicts or rejected, with its reasons")
    conflicts.add_argument(
        "--clear", nargs="*", metavar="ID", help="forget the entries of these record ids (all: none given)"
    )
    command("status", "device id, server, sign-in, cursor and counts")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = LocalStore(args.store)
    try:
        return _run(args, store, sys.stdout)
    except BrokenPipeError:
        # `offsync-device list account | head`: the reader went away; that is not an error.
        _silence_stdout()
        return 0
    except CliError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.code
    except (FieldError, SignInError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except (KeyError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    finally:
        store.close()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise BrokenPipe again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _run(args: argparse.Namespace, store: LocalStore, out: TextIO) -> int:
    cmd = args.cmd
    if cmd == "login":
        return _login(args, store, out)
    if cmd == "logout":
        asyncio.run(Credentials(store).logout())
        out.write("signed out\n")
    elif cmd == "sync":
        return _sync(store, out, watch=args.watch)
    elif cmd == "list":
        total = store.count(args.entity)
        for rid, rec in store.list(args.entity, max(args.limit, 0)):
            out.write(f"{rid}  {orjson.dumps(rec).decode()}\n")
        out.flush()
        if total > args.limit:
            sys.stderr.write(f"(showing {max(args.limit, 0)} of {total} {args.entity} records; use --limit {total})\n")
    elif cmd == "show":
        found = store.get(args.entity, args.id)
        if found is None:
            raise CliError(f"no {args.entity} {args.id} on this device")
        out.write(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif cmd == "create":
        out.write(store.create(args.entity, parse(args.entity, args.fields, _attributes(store, args.entity))) + "\n")
    elif cmd == "edit":
        store.update(args.entity, args.id, parse(args.entity, args.fields, _attributes(store, args.entity)))
        out.write("saved offline\n")
    elif cmd == "delete":
        store.delete(args.entity, args.id)
        out.write("deleted offline\n")
    elif cmd == "pending":
        for ch in store.pending():
            state = f"in flight ({ch.batch_id})" if ch.batch_id else "queued"
            out.write(
                f"#{ch.seq} {ch.op} {ch.entity} {ch.id} base={ch.base_version} {orjson.dumps(ch.fields).decode()} [{state}]\n"
            )
    elif cmd == "conflicts":
        if args.clear is not None:
            n = store.clear_conflicts(args.clear or None)
            out.write(f"cleared {n} entr{'y' if n == 1 else 'ies'}\n")
            return 0
        for c in store.conflicts():
            why = f": {c.message}" if c.message else ""
            out.write(
                f"{c.status} {c.entity} {c.id} ({c.code}{why}) mine={orjson.dumps(c.local).decode()} "
                f"server={orjson.dumps(c.server).decode()}\n"
            )
    elif cmd == "status":
        signed = store.meta("username") if Credentials(store).signed_in else None
        out.write(
            f"device {store.device_id()} server {store.meta('api_url') or store.meta('url') or '-'} "
            f"signed in as {signed or '-'} cursor {store.cursor} records {store.count()} "
            f"pending {len(store.pending())} conflicts {len(store.conflicts())}\n"
        )
    return 0


def _login(args: argparse.Namespace, store: LocalStore, out: TextIO) -> int:
    if args.token:
        return _login_with_token(args, store, out)
    if not args.username:
        raise CliError("give --username (or --token with a device token from an admin)")
    password = args.password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        if not sys.stdin.isatty():
            raise CliError("no password: give --password, --password-stdin, or run in a terminal to be asked")
        password = getpass.getpass(f"password for {args.username}: ")
    creds = Credentials(store)
    info = asyncio.run(creds.login(args.url, args.username, password))
    if args.sync_url:
        store.set_meta("url", args.sync_url)
    asyncio.run(_fetch_metadata(store, creds))
    out.write(f"signed in as {args.username} at {info.api_url}; device id {store.device_id()}\n")
    return 0


def _login_with_token(args: argparse.Namespace, store: LocalStore, out: TextIO) -> int:
    if not args.url.startswith(("ws://", "wss://")):
        raise CliError(describe_connect_failure(args.url, ValueError(args.url)))
    did = token_device_id(args.token)
    held = store.meta("device_id")
    # A store that never reached a server (offline edits before the first login) simply
    # becomes the token's device, pending changes and all; one that did belongs to its device.
    reached_server = store.meta("token") is not None or store.cursor > 0
    if did and held and held != did and reached_server and store.count() + len(store.pending()) > 0:
        raise CliError(f"this store belongs to device {held}; the token is for {did}: use another --store")
    if did:
        store.set_meta("device_id", did)  # the server only accepts the token from its own device
    store.set_meta("url", args.url)
    store.set_meta("token", args.token)
    store.set_meta("refresh_token", "")
    out.write(f"logged in; device id {store.device_id()}\n")
    return 0


async def _fetch_metadata(store: LocalStore, creds: Credentials) -> None:
    """Cache the offline entities' attribute types (for typing name=value); best effort."""
    api = store.meta("api_url")
    if not api or not creds.signed_in:
        return
    with contextlib.suppress(httpx.HTTPError, SignInError, ValueError):
        token = await creds()
        async with httpx.AsyncClient(timeout=10) as c:
            resp = await c.get(api + "/v1/device/entities", headers={"Authorization": f"Bearer {token}"})
        if resp.status_code == 200:
            store.set_meta("entities", orjson.dumps({e["logical_name"]: e["attributes"] for e in resp.json()}).decode())


def _attributes(store: LocalStore, entity: str) -> dict[str, Any] | None:
    raw = store.meta("entities")
    if not raw:
        return None
    known: dict[str, Any] = orjson.loads(raw)
    if entity not in known:
        raise CliError(f"{entity} is not an entity this device syncs (it has: {', '.join(sorted(known)) or 'none'})")
    attrs: dict[str, Any] = known[entity]
    return attrs


def _device(store: LocalStore, **kw: Any) -> Device:
    url = store.meta("url")
    creds = Credentials(store)
    if url and creds.signed_in:
        return Device(url, store, creds, **kw)
    token = store.meta("token")
    if url and token:
        return Device(url, store, token, **kw)
    raise CliError("this device is not signed in: run `offsync-device login --url <server> --username <you>`")


def _sync(store: LocalStore, out: TextIO, *, watch: bool) -> int:
    if watch:
        return _watch(store, out)
    device = _device(store, on_progress=ProgressBar())
    try:
        report = asyncio.run(device.sync(max_attempts=4))
    except SignInRequired as exc:
        raise CliError(f"{exc}: run `offsync-device login`", 3) from None
    except SyncRefused as exc:
        raise CliError(f"the server refused this device: {_reason(exc.reason)}", 2) from None
    except SyncInterrupted as exc:
        raise CliError(
            f"sync did not finish: {_reason(exc.reason)}. Nothing is lost; the next sync resumes", 1
        ) from None
    except TimeoutError:
        raise CliError("sync did not finish in time; nothing is lost, the next sync resumes", 1) from None
    sys.stderr.write("\n")
    asyncio.run(_fetch_metadata(store, Credentials(store)))
    out.write(
        f"synced: {report.ops} ops, cursor {report.cursor}, {report.batches} batch(es) uploaded, "
        f"{len(report.problems)} conflict(s)/rejection(s), {report.seconds:.2f}s\n"
    )
    _print_problems(report, out)
    return 0


def _print_problems(report: SyncReport, out: TextIO) -> None:
    for res in report.problems:
        what = "rejected" if res.status == "rejected" else "conflict (server's version kept)"
        out.write(f"  {what}: {res.entity} {res.id}: {res.message or res.code}\n")
    if report.problems:
        out.write("  see `offsync-device conflicts`; clear them with `offsync-device conflicts --clear`\n")


def _reason(reason: str) -> str:
    """A close reason without its machine prefix ("forbidden: ..." → "...")."""
    head, sep, rest = reason.partition(": ")
    return rest if sep and head.replace("_", "").isalpha() and head.islower() else reason


def _watch(store: LocalStore, out: TextIO) -> int:
    def on_ops(ops: list[p.OpRow]) -> None:
        for _op_id, _bucket, op, entity, rid, version, attrs in ops:
            line = f"{op} {entity} {rid} v{version}"
            if op == "put" and attrs is not None:
                line += f" {orjson.dumps(attrs).decode()}"
            out.write(line + "\n")
        out.flush()

    async def run() -> SyncReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        device = _device(store, on_ops=on_ops)
        sys.stderr.write("watching for changes; Ctrl-C stops\n")
        return await device.run(stop)

    try:
        report = asyncio.run(run())
    except SignInRequired as exc:
        raise CliError(f"{exc}: run `offsync-device login`", 3) from None
    except SyncRefused as exc:
        raise CliError(f"the server refused this device: {_reason(exc.reason)}", 2) from None
    _print_problems(report, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
