"""``python -m offsync_stack up``: the whole stack on embedded defaults, until Ctrl-C / SIGTERM.
``OFFSYNC_BROKER=kafka`` runs it on one local Apache Kafka instead of the embedded broker
(offsync_stack.kafka; needs Java 17+ and Maven); ``python -m offsync_stack kafka-fetch`` only
fetches the pinned Kafka into the cache.

Prints where the admin API, its OpenAPI docs, the records API and the device websocket listen,
and writes the same (with PIDs and an admin token) to ``.offsync/stack.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from offsync_stack.embedded import EMBEDDED_BROKER_ENV, EmbeddedBroker, EmbeddedPostgres, rmtree
from offsync_stack.kafka import KafkaCluster, KafkaUnavailable, fetch
from offsync_stack.processes import SERVICES, ServiceFailed, ServiceGroup

DEFAULT_PORTS = {
    "OFFSYNC_PROFILE_PORT": 8100,
    "OFFSYNC_CONFLICT_PORT": 8200,
    "OFFSYNC_SYNC_PORT": 8300,
    "OFFSYNC_PUBLISH_PORT": 8400,
}


def _ports() -> dict[str, int]:
    return {k: int(os.environ.get(k, v)) for k, v in DEFAULT_PORTS.items()}


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (0600) from the first byte: it holds an admin
    token, and a file made world-readable first and narrowed after leaks in between."""
    path.unlink(missing_ok=True)  # an older file keeps its mode through O_TRUNC: start afresh
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def admin_password_for(state_dir: Path) -> str:
    """The bootstrap admin's generated password, kept in ``state_dir`` (mode 0600) so a restart
    on the same database prints the password that database holds."""
    path = state_dir / "admin-password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def up(state_dir: Path, fresh: bool) -> int:
    from offsync_shared import bus
    from offsync_shared.auth import ADMIN_AUDIENCE, BOOTSTRAP_ADMIN_USER_ID, issue_token
    from offsync_shared.settings import CommonSettings

    CommonSettings.from_env()  # a bad OFFSYNC_ variable ends here, before anything starts
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if fresh:
        rmtree(state_dir / "pg")
        (state_dir / "admin-password").unlink(missing_ok=True)
    pg = broker = kafka = None
    group: ServiceGroup | None = None
    try:
        env: dict[str, str] = {}
        if not os.environ.get("OFFSYNC_PG_DSN"):
            pg = EmbeddedPostgres(state_dir / "pg")
            pg.start()
            env["OFFSYNC_PG_DSN"] = pg.create_database("offsync")
        if os.environ.get("OFFSYNC_KAFKA_BOOTSTRAP"):
            pass
        elif os.environ.get("OFFSYNC_BROKER", "embedded") == "kafka":
            # A fresh single-node cluster each time, like the embedded broker (its data is in
            # the state dir only while it runs).
            rmtree(state_dir / "kafka")
            try:
                kafka = KafkaCluster(state_dir / "kafka", size=1, heap_mb=384)
                kafka.start()
            except KafkaUnavailable as exc:
                print(f"OFFSYNC_BROKER=kafka: {exc}", file=sys.stderr, flush=True)
                return 2
            env["OFFSYNC_KAFKA_BOOTSTRAP"] = kafka.bootstrap
            env.update(kafka.service_env())
        else:
            broker = EmbeddedBroker(state_dir / "broker")
            broker.start()
            env["OFFSYNC_KAFKA_BOOTSTRAP"] = broker.bootstrap
            env.update(EMBEDDED_BROKER_ENV)
        settings = CommonSettings(**{k.removeprefix("OFFSYNC_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
        asyncio.run(
            bus.ensure_topics(
                settings.kafka_bootstrap,
                settings.topic_prefix,
                settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                check_existing=True,
            )
        )
        ports = _ports()
        env.update({k: str(v) for k, v in ports.items()})
        admin_username = os.environ.get("OFFSYNC_BOOTSTRAP_ADMIN_USERNAME", "admin")
        admin_password = os.environ.get("OFFSYNC_BOOTSTRAP_ADMIN_PASSWORD") or admin_password_for(state_dir)
        env["OFFSYNC_BOOTSTRAP_ADMIN_USERNAME"] = admin_username
        env["OFFSYNC_BOOTSTRAP_ADMIN_PASSWORD"] = admin_password
        group = ServiceGroup(env=env, log_dir=state_dir / "logs")
        for spec in SERVICES:
            group.start(spec, ports[spec.port_env])
        try:
            group.wait_ready(timeout=60)
        except ServiceFailed as exc:
            print(exc, file=sys.stderr, flush=True)
            return 1
        token = issue_token(settings.jwt_secret, BOOTSTRAP_ADMIN_USER_ID, ADMIN_AUDIENCE, ttl_seconds=30 * 24 * 3600)
        p, c, s = ports["OFFSYNC_PROFILE_PORT"], ports["OFFSYNC_CONFLICT_PORT"], ports["OFFSYNC_SYNC_PORT"]
        info = {
            "console": f"http://127.0.0.1:{p}/console/",
            "admin_api": f"http://127.0.0.1:{p}",
            "admin_docs": f"http://127.0.0.1:{p}/docs",
            "records_api": f"http://127.0.0.1:{c}",
            "records_docs": f"http://127.0.0.1:{c}/docs",
            "device_ws": f"ws://127.0.0.1:{s}/v1/sync",
            "field_app": f"http://127.0.0.1:{s}/app/",
            "pg_dsn": settings.pg_dsn,
            "kafka_bootstrap": settings.kafka_bootstrap,
            "admin_token": token,
            "admin_username": admin_username,
            "admin_password": admin_password,
            "logs": str(state_dir / "logs"),
            "pids": {
                **{name: svc.proc.pid for name, svc in group.running.items()},
                **({"postgres": pg.proc.pid} if pg and pg.proc else {}),
                **({"broker": broker.proc.pid} if broker and broker.proc else {}),
                **({f"kafka-{n.node_id}": n.proc.pid for n in kafka.nodes if n.proc} if kafka else {}),
            },
        }
        # Whole or not at all (readers poll for this file), and private from its first byte.
        _write_private(state_dir / "stack.json.tmp", json.dumps(info, indent=2))
        (state_dir / "stack.json.tmp").replace(state_dir / "stack.json")
        print("Offsync is up.", flush=True)
        for k in ("console", "admin_api", "admin_docs", "records_api", "device_ws", "field_app", "logs"):
            print(f"  {k:<12} {info[k]}", flush=True)
        print(f"  admin sign-in {admin_username} / {admin_password}  (the console, or POST /v1/auth/login)", flush=True)
        print(f"  admin token in {state_dir / 'stack.json'} (admin_token)\nCtrl-C stops everything.", flush=True)
        while not stop.wait(1.0):
            for name, svc in list(group.running.items()):
                if svc.proc.poll() is not None:
                    print(f"{name} exited with {svc.proc.returncode}; see {svc.log_path}", file=sys.stderr, flush=True)
                    return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        if group is not None:
            group.stop_all()
        if broker is not None:
            broker.stop()
        if kafka is not None:
            kafka.stop()
        if pg is not None:
            pg.stop()
        (state_dir / "stack.json").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="offsync-stack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="start the whole stack in the foreground")
    p_up.add_argument("--state-dir", default=".offsync", type=Path)
    p_up.add_argument("--fresh", action="store_true", help="start from an empty database")
    sub.add_parser("kafka-fetch", help="fetch the pinned Apache Kafka through Maven into the cache")
    args = parser.parse_args()
    if args.cmd == "kafka-fetch":
        try:
            print(fetch())
        except KafkaUnavailable as exc:
            sys.exit(str(exc))
        return
    if args.cmd == "up":
        args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sys.exit(up(args.state_dir.resolve(), args.fresh))


if __name__ == "__main__":
    main()
