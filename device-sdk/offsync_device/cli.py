"""`offsync-device`: a command-line device. Log in with a token, sync with a progress bar, and
list/edit records offline; `pending` and `conflicts` show what has not (or not cleanly) synced."""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

import orjson

from offsync_device.client import Device, SyncInterrupted, SyncRefused
from offsync_device.local_store import LocalStore


def _value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _fields(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, val = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected name=value, got {pair!r}")
        out[key] = _value(val)
    return out


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="offsync-device", description=__doc__)
    ap.add_argument("--store", default=str(Path.home() / ".offsync-device.sqlite"), help="local SQLite store")
    sub = ap.add_subparsers(dest="cmd", required=True)
    login = sub.add_parser("login", help="remember the server URL and a device token")
    login.add_argument("--url", required=True, help="ws://host:port/v1/sync")
    login.add_argument("--token", required=True, help="a device token (audience offsync-device)")
    sub.add_parser("sync", help="upload pending changes, then download until caught up")
    ls = sub.add_parser("list", help="records of an entity as seen offline")
    ls.add_argument("entity")
    ls.add_argument("--limit", type=int, default=50)
    show = sub.add_parser("show")
    show.add_argument("entity")
    show.add_argument("id")
    create = sub.add_parser("create", help="create a record offline: create account name=Contoso")
    create.add_argument("entity")
    create.add_argument("fields", nargs="*")
    edit = sub.add_parser("edit", help="edit a record offline: edit account <id> name=New")
    edit.add_argument("entity")
    edit.add_argument("id")
    edit.add_argument("fields", nargs="+")
    delete = sub.add_parser("delete")
    delete.add_argument("entity")
    delete.add_argument("id")
    sub.add_parser("pending", help="offline changes not yet acknowledged by the server")
    sub.add_parser("conflicts", help="changes the server resolved as conflicts or rejected")
    sub.add_parser("status")
    args = ap.parse_args(argv)
    store = LocalStore(args.store)
    out = sys.stdout
    try:
        if args.cmd == "login":
            did = token_device_id(args.token)
            held = store.meta("device_id")
            # A store that never reached a server (offline edits before the first login) simply
            # becomes the token's device, pending changes and all; one that did belongs to its device.
            reached_server = store.meta("token") is not None or store.cursor > 0
            if did and held and held != did and reached_server and store.count() + len(store.pending()) > 0:
                raise SystemExit(f"this store belongs to device {held}; the token is for {did}: use another --store")
            if did:
                store.set_meta("device_id", did)  # the server only accepts the token from its own device
            store.set_meta("url", args.url)
            store.set_meta("token", args.token)
            out.write(f"logged in; device id {store.device_id()}\n")
        elif args.cmd == "sync":
            url, token = store.meta("url"), store.meta("token")
            if not url or not token:
                raise SystemExit("run `offsync-device login` first")
            device = Device(url, store, token, on_progress=ProgressBar())
            try:
                report = asyncio.run(device.sync())
            except SyncRefused as exc:
                sys.stderr.write(f"\nrefused by the server: {exc.reason} (close code {exc.code})\n")
                return 2
            except SyncInterrupted as exc:
                sys.stderr.write(f"\nsync interrupted: {exc.reason or exc.code}; run it again\n")
                return 1
            sys.stderr.write("\n")
            out.write(
                f"synced: {report.ops} ops, cursor {report.cursor}, {report.batches} batch(es) uploaded, "
                f"{len(report.problems)} conflict(s)/rejection(s), {report.seconds:.2f}s\n"
            )
        elif args.cmd == "list":
            for rid, rec in store.list(args.entity, args.limit):
                out.write(f"{rid}  {orjson.dumps(rec).decode()}\n")
        elif args.cmd == "show":
            found = store.get(args.entity, args.id)
            out.write(
                ("not found" if found is None else orjson.dumps(found, option=orjson.OPT_INDENT_2).decode()) + "\n"
            )
        elif args.cmd == "create":
            out.write(store.create(args.entity, _fields(args.fields)) + "\n")
        elif args.cmd == "edit":
            store.update(args.entity, args.id, _fields(args.fields))
            out.write("saved offline\n")
        elif args.cmd == "delete":
            store.delete(args.entity, args.id)
            out.write("deleted offline\n")
        elif args.cmd == "pending":
            for ch in store.pending():
                state = f"in flight ({ch.batch_id})" if ch.batch_id else "queued"
                out.write(
                    f"#{ch.seq} {ch.op} {ch.entity} {ch.id} base={ch.base_version} {orjson.dumps(ch.fields).decode()} [{state}]\n"
                )
        elif args.cmd == "conflicts":
            for c in store.conflicts():
                out.write(
                    f"{c.status} {c.entity} {c.id} code={c.code} mine={orjson.dumps(c.local).decode()} server={orjson.dumps(c.server).decode()}\n"
                )
        elif args.cmd == "status":
            out.write(
                f"device {store.device_id()} cursor {store.cursor} records {store.count()} "
                f"pending {len(store.pending())} conflicts {len(store.conflicts())}\n"
            )
    except (KeyError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
