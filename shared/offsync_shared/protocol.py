"""The device sync protocol v1 codec: frame types, their validation, and JSON encoding (orjson).

Pure: no network, no database. The sync gateway and the device SDK both use it, so the two can
never disagree about the wire format. docs/protocol.md is the human description of this module.

Ops travel positionally (``[op_id, bucket, op, entity, id, version, attributes]``) because an
initial download is hundreds of thousands of them and arrays decode straight into the tuples the
device stores, with no per-op object allocation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

VERSION = 1
PATH = "/v1/sync"

# -- close codes (websocket close frame; the reason string says what to do) -----------------
CLOSE_GOING_AWAY = 1001  # server draining: reconnect (with backoff) to another process
CLOSE_TOO_BIG = 1009  # frame above the transport's hard cap (see max_frame_bytes for the soft one)
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013  # connection-rate cap: back off and retry
CLOSE_BAD_HELLO = 4000  # first frame was not a valid hello
CLOSE_UNAUTHENTICATED = 4001  # missing, forged, expired or wrong-audience token: renew it
CLOSE_FORBIDDEN = 4003  # disabled user, no read_offline_profile privilege, token for another device
CLOSE_NO_PROFILE = 4004  # no published mobile offline profile (or it was removed)
CLOSE_APP_NOT_AVAILABLE = 4006  # hello.app names no offline-enabled app module holding the user's profile
CLOSE_REVOKED = 4010  # this sign-in was revoked (signed out, device revoked, password changed): sign in again
CLOSE_TIMEOUT = 4008  # no hello in time, or the device went silent
CLOSE_SUPERSEDED = 4009  # the same device opened a newer connection; this one is closed

CLOSE_CODES: dict[int, str] = {
    CLOSE_GOING_AWAY: "going_away",
    CLOSE_TOO_BIG: "too_big",
    CLOSE_INTERNAL: "internal",
    CLOSE_TRY_AGAIN_LATER: "try_again_later",
    CLOSE_BAD_HELLO: "bad_hello",
    CLOSE_UNAUTHENTICATED: "unauthenticated",
    CLOSE_FORBIDDEN: "forbidden",
    CLOSE_NO_PROFILE: "no_profile",
    CLOSE_APP_NOT_AVAILABLE: "app_not_available",
    CLOSE_TIMEOUT: "timeout",
    CLOSE_SUPERSEDED: "superseded",
    CLOSE_REVOKED: "revoked",
}

# -- error frame codes (the connection stays open) --------------------------------------------
ERR_BAD_FRAME = "bad_frame"  # not JSON, not an object, or a field of the wrong type
ERR_UNKNOWN_TYPE = "unknown_type"
ERR_FRAME_TOO_LARGE = "frame_too_large"
ERR_BATCH_TOO_LARGE = "batch_too_large"
ERR_RATE_LIMITED = "rate_limited"
ERR_UNAVAILABLE = "unavailable"  # the broker refused the batch; resend it later (same batch id)
ERR_UNKNOWN_BUCKET = "unknown_bucket"

ERROR_CODES = (
    ERR_BAD_FRAME,
    ERR_UNKNOWN_TYPE,
    ERR_FRAME_TOO_LARGE,
    ERR_BATCH_TOO_LARGE,
    ERR_RATE_LIMITED,
    ERR_UNAVAILABLE,
    ERR_UNKNOWN_BUCKET,
)
RETRIABLE = {ERR_RATE_LIMITED, ERR_UNAVAILABLE}

ChangeOp = Literal["create", "update", "delete"]
CHANGE_OPS = ("create", "update", "delete")
MAX_ID_LEN = 200

# Optional behaviours a device asks for in hello.features; unknown names are ignored both ways,
# so old devices and old servers keep working unchanged.
FEATURE_OPS_CHECKPOINT = "ops_checkpoint"  # a checkpoint may ride inside the ops frame before it
FEATURE_ENTITY_METADATA = "entity_metadata"  # a `metadata` frame follows `welcome` (and a profile change)


class FrameError(ValueError):
    """A frame that does not follow the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, field: str | None = None, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.ref = ref  # the batch id the error is about, when the frame named a usable one


# ===================================== client -> server =====================================


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame. ``cursor`` is the op id of the device's last checkpoint (0 = empty store);
    ``checksums`` names every bucket the device holds with its checksum at that checkpoint."""

    device_id: str
    cursor: int = 0
    checksums: dict[str, int] = field(default_factory=dict)
    token: str | None = None  # when the client cannot send an Authorization header
    features: tuple[str, ...] = ()  # FEATURE_* names the device understands
    # The app module (id or name) the device syncs for; None: no app check (older SDKs).
    app: str | None = None
    # What the device says of itself, for the admin console's device list (all optional).
    client: str | None = None  # SDK / app name and version, e.g. "offsync-device/0.1.0"
    records: int | None = None  # records the device holds
    pending: int | None = None  # changes waiting to be uploaded


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    op: ChangeOp
    entity: str
    id: str
    base_version: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Upload:
    batch_id: str
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Refetch:
    """Checksum mismatch: re-send these buckets from scratch."""

    buckets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Auth:
    """A renewed token, sent mid-session before the current one expires."""

    token: str


@dataclass(frozen=True, slots=True)
class Ping:
    t: float | None = None


@dataclass(frozen=True, slots=True)
class Pong:
    t: float | None = None


ClientFrame = Hello | Upload | Refetch | Auth | Ping | Pong


# ===================================== server -> client =====================================

# [op_id, bucket, "put"|"remove", entity, id, version, attributes (object) | null]
OpRow = tuple[int, str, str, str, str, int, Any]


@dataclass(frozen=True, slots=True)
class Welcome:
    user_id: str
    buckets: tuple[str, ...]
    heartbeat_s: float
    limits: dict[str, int]
    version: int = VERSION
    # entity -> its profile item's sync interval (minutes): the longest a device that is not
    # connected live (background / metered mode) may go without syncing that entity.
    sync_intervals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ops:
    """A bounded batch of ops in op-id order; ``done``/``total`` count ops of this catch-up."""

    ops: Any  # list of OpRow (or a pre-encoded orjson.Fragment of that list on the server)
    done: int
    total: int
    # When set, the device may persist this as its cursor once the page is stored, so a broken
    # initial download resumes here instead of from zero (its buckets are verified at the next
    # checkpoint as usual).
    resume: int | None = None
    # Only to devices that sent FEATURE_OPS_CHECKPOINT: the checkpoint that follows these ops,
    # in the same frame (live fanout sends one frame per change instead of two).
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The device holds every op up to ``cursor``; its buckets must now have these checksums."""

    cursor: int
    checksums: dict[str, int]


@dataclass(frozen=True, slots=True)
class Metadata:
    """The entities of the user's profile with their attributes (only to devices that sent
    FEATURE_ENTITY_METADATA): each ``{"name", "display_name", "attributes": {name: {"type",
    "required", "max_length"?, "options"?, "target"?}}}``, so a device validates offline edits the
    way the server will."""

    entities: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """The user no longer has these buckets: delete their records (keep pending local changes)."""

    buckets: tuple[str, ...]
    reason: str = "removed"


@dataclass(frozen=True, slots=True)
class Reset:
    """These buckets are re-sent from scratch next (after a refetch): forget their membership."""

    buckets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChangeResult:
    seq: int
    entity: str
    id: str
    status: Literal["applied", "conflict", "rejected"]
    version: int | None = None
    record: dict[str, Any] | None = None
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    batch_id: str
    results: tuple[ChangeResult, ...]


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str
    ref: str | None = None  # the batch id or frame type the error is about
    retry_after: float | None = None

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE


ServerFrame = Welcome | Ops | Checkpoint | Metadata | Drop | Reset | Result | Error | Ping | Pong


# ========================================= encoding =========================================


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def encode_result(batch_id: str, results: Iterable[Mapping[str, Any]]) -> bytes:
    """A ``result`` frame straight from result mappings with the ChangeResult fields (e.g. the
    BatchApplied payload as it came off the bus): a gateway encodes an answer once, without
    building frame objects first."""
    return orjson.dumps({"type": "result", "batch_id": batch_id, "results": [_drop_none(r) for r in results]})


def join_op_rows(rows: Iterable[str]) -> bytes:
    """The ``ops`` array of an Ops frame from op rows each already encoded as a JSON array
    (the database builds them, see sync-service's bucket reads): joined, never re-encoded."""
    return ("[" + ",".join(rows) + "]").encode()


def encode_ops_with_checkpoint(ops_json: bytes, count: int, checkpoint: Checkpoint) -> bytes:
    """What ``encode`` makes of ``Ops(ops=Fragment(ops_json), done=count, total=count,
    checkpoint=checkpoint)``, without building the frame: live fanout encodes one such frame per
    group of devices per notification. ``test_device_protocol_codec`` holds the two equal."""
    cp = orjson.dumps({"cursor": checkpoint.cursor, "checksums": checkpoint.checksums})
    return b'{"type":"ops","ops":%b,"done":%d,"total":%d,"checkpoint":%b}' % (ops_json, count, count, cp)


def encode(frame: ClientFrame | ServerFrame) -> bytes:
    """One frame as UTF-8 JSON bytes."""
    if isinstance(frame, Ops):
        cp = frame.checkpoint
        return orjson.dumps(
            _drop_none(
                {
                    "type": "ops",
                    "ops": frame.ops,
                    "done": frame.done,
                    "total": frame.total,
                    "resume": frame.resume,
                    "checkpoint": None if cp is None else {"cursor": cp.cursor, "checksums": cp.checksums},
                }
            )
        )
    if isinstance(frame, Checkpoint):
        return orjson.dumps({"type": "checkpoint", "cursor": frame.cursor, "checksums": frame.checksums})
    if isinstance(frame, Hello):
        return orjson.dumps(
            _drop_none(
                {
                    "type": "hello",
                    "version": VERSION,
                    "device_id": frame.device_id,
                    "cursor": frame.cursor,
                    "checksums": frame.checksums,
                    "token": frame.token,
                    "features": list(frame.features) or None,
                    "app": frame.app,
                    "client": frame.client,
                    "records": frame.records,
                    "pending": frame.pending,
                }
            )
        )
    if isinstance(frame, Upload):
        return orjson.dumps(
            {
                "type": "upload",
                "batch_id": frame.batch_id,
                "changes": [
                    _drop_none(
                        {
                            "seq": c.seq,
                            "op": c.op,
                            "entity": c.entity,
                            "id": c.id,
                            "base_version": c.base_version,
                            "fields": c.fields,
                        }
                    )
                    for c in frame.changes
                ],
            }
        )
    if isinstance(frame, Result):
        return encode_result(
            frame.batch_id,
            (
                {
                    "seq": r.seq,
                    "entity": r.entity,
                    "id": r.id,
                    "status": r.status,
                    "version": r.version,
                    "record": r.record,
                    "code": r.code,
                    "message": r.message,
                }
                for r in frame.results
            ),
        )
    if isinstance(frame, Error):
        return orjson.dumps(
            _drop_none(
                {
                    "type": "error",
                    "code": frame.code,
                    "message": frame.message,
                    "retriable": frame.retriable,
                    "ref": frame.ref,
                    "retry_after": frame.retry_after,
                }
            )
        )
    if isinstance(frame, Welcome):
        return orjson.dumps(
            {
                "type": "welcome",
                "version": frame.version,
                "user_id": frame.user_id,
                "buckets": list(frame.buckets),
                "heartbeat_s": frame.heartbeat_s,
                "limits": frame.limits,
                **({"sync_intervals": frame.sync_intervals} if frame.sync_intervals else {}),
            }
        )
    if isinstance(frame, Metadata):
        return orjson.dumps({"type": "metadata", "entities": list(frame.entities)})
    if isinstance(frame, Drop):
        return orjson.dumps({"type": "drop", "buckets": list(frame.buckets), "reason": frame.reason})
    if isinstance(frame, Reset):
        return orjson.dumps({"type": "reset", "buckets": list(frame.buckets)})
    if isinstance(frame, Refetch):
        return orjson.dumps({"type": "refetch", "buckets": list(frame.buckets)})
    if isinstance(frame, Auth):
        return orjson.dumps({"type": "auth", "token": frame.token})
    if isinstance(frame, Ping):
        return orjson.dumps(_drop_none({"type": "ping", "t": frame.t}))
    if isinstance(frame, Pong):
        return orjson.dumps(_drop_none({"type": "pong", "t": frame.t}))
    raise TypeError(f"not a protocol frame: {type(frame).__name__}")


# ========================================= decoding =========================================


def has_nul(obj: Any) -> bool:
    """True when a string anywhere in ``obj`` (keys included) holds a NUL character."""
    if isinstance(obj, str):
        return "\x00" in obj
    if isinstance(obj, dict):
        return any("\x00" in k or has_nul(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(has_nul(v) for v in obj)
    return False


def _load(raw: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(ERR_BAD_FRAME, f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(ERR_BAD_FRAME, "frame must be a JSON object")
    if not isinstance(obj.get("type"), str):
        raise FrameError(ERR_BAD_FRAME, "frame needs a string 'type'", "type")
    return obj


def _str(obj: dict[str, Any], key: str, *, required: bool = True, max_len: int = MAX_ID_LEN) -> Any:
    v = obj.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise FrameError(ERR_BAD_FRAME, f"'{key}' must be a non-empty string of at most {max_len} characters", key)
    return v


def _int(obj: dict[str, Any], key: str, *, required: bool = True, default: int | None = None) -> Any:
    v = obj.get(key, default)
    if v is None and not required:
        return None
    # bool is an int in Python; on the wire it is not a number.
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 2**63:
        raise FrameError(ERR_BAD_FRAME, f"'{key}' must be a non-negative integer", key)
    return v


def _num(obj: dict[str, Any], key: str) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise FrameError(ERR_BAD_FRAME, f"'{key}' must be a number", key)
    return float(v)


def _buckets(obj: dict[str, Any]) -> tuple[str, ...]:
    v = obj.get("buckets")
    if not isinstance(v, list) or not all(isinstance(b, str) and b for b in v):
        raise FrameError(ERR_BAD_FRAME, "'buckets' must be a list of bucket ids", "buckets")
    return tuple(v)


def _change(i: int, c: Any) -> Change:
    where = f"changes[{i}]"
    if not isinstance(c, dict):
        raise FrameError(ERR_BAD_FRAME, f"{where} must be an object", where)
    op = c.get("op")
    if op not in CHANGE_OPS:
        raise FrameError(ERR_BAD_FRAME, f"{where}.op must be one of create, update, delete", f"{where}.op")
    try:
        seq = _int(c, "seq")
        entity = _str(c, "entity")
        rid = _str(c, "id")
        base = _int(c, "base_version", required=False)
    except FrameError as exc:
        raise FrameError(exc.code, f"{where}: {exc.message}", f"{where}.{exc.field}") from None
    fields = c.get("fields", {})
    if not isinstance(fields, dict):
        raise FrameError(ERR_BAD_FRAME, f"{where}.fields must be an object", f"{where}.fields")
    if op == "update" and base is None:
        raise FrameError(ERR_BAD_FRAME, f"{where}: an update needs base_version", f"{where}.base_version")
    return Change(seq=seq, op=op, entity=entity, id=rid, base_version=base, fields=fields)


def _count(obj: dict[str, Any], key: str) -> int | None:
    """An optional non-negative count a device reports about itself (absent: None)."""
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**63:
        raise FrameError(ERR_BAD_FRAME, f"'{key}' must be a non-negative integer", key)
    return v


def _has_nul_escape(raw: bytes | bytearray | memoryview | str) -> bool:
    if isinstance(raw, str):
        return "\\u0000" in raw
    return b"\\u0000" in (raw if isinstance(raw, (bytes, bytearray)) else bytes(raw))


def decode_client(raw: bytes | str, *, max_changes: int | None = None) -> ClientFrame:
    """Parse and validate one client frame; raises FrameError with a stable code. An upload of
    more than ``max_changes`` changes is refused before any change is validated."""
    obj = _load(raw)
    # JSON can carry NUL only as the escape \u0000, so one substring scan of the raw frame (C
    # speed) clears almost every frame; only one that has the escape is walked. PostgreSQL text
    # cannot hold NUL: such a change could never be stored, and its batch never answered.
    if _has_nul_escape(raw) and has_nul(obj):
        raise FrameError(ERR_BAD_FRAME, "text must not contain NUL characters (\\u0000)")
    t = obj["type"]
    if t == "hello":
        version = obj.get("version", VERSION)
        if version != VERSION:
            raise FrameError(
                ERR_BAD_FRAME, f"unsupported protocol version {version!r}; this server speaks {VERSION}", "version"
            )
        checksums = obj.get("checksums", {})
        if not isinstance(checksums, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in checksums.values()
        ):
            raise FrameError(ERR_BAD_FRAME, "'checksums' must map bucket ids to integers in [0, 2^32)", "checksums")
        features = obj.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise FrameError(ERR_BAD_FRAME, "'features' must be a list of strings", "features")
        return Hello(
            device_id=_str(obj, "device_id"),
            cursor=_int(obj, "cursor", default=0),
            checksums=checksums,
            token=_str(obj, "token", required=False, max_len=8192),
            features=tuple(f for f in features[:32] if len(f) <= 64),
            app=_str(obj, "app", required=False),
            client=_str(obj, "client", required=False, max_len=120),
            records=_count(obj, "records"),
            pending=_count(obj, "pending"),
        )
    if t == "upload":
        changes = obj.get("changes")
        if not isinstance(changes, list):
            raise FrameError(ERR_BAD_FRAME, "'changes' must be a list", "changes")
        if max_changes is not None and len(changes) > max_changes:
            bid = obj.get("batch_id")
            raise FrameError(
                ERR_BATCH_TOO_LARGE,
                f"batch has {len(changes)} changes; at most {max_changes} per batch",
                "changes",
                ref=bid if isinstance(bid, str) and 0 < len(bid) <= MAX_ID_LEN and "\x00" not in bid else None,
            )
        parsed = tuple(_change(i, c) for i, c in enumerate(changes))
        return Upload(batch_id=_str(obj, "batch_id"), changes=parsed)
    if t == "refetch":
        return Refetch(buckets=_buckets(obj))
    if t == "auth":
        return Auth(token=_str(obj, "token", max_len=8192))
    if t == "ping":
        return Ping(t=_num(obj, "t"))
    if t == "pong":
        return Pong(t=_num(obj, "t"))
    raise FrameError(ERR_UNKNOWN_TYPE, f"unknown frame type {t[:40]!r}", "type")


def _op_row(row: Any) -> OpRow:
    if not (isinstance(row, list) and len(row) == 7):
        raise FrameError(ERR_BAD_FRAME, "an op must be [op_id, bucket, op, entity, id, version, attributes]")
    op_id, bucket, op, entity, rid, version, attrs = row
    if not (isinstance(op_id, int) and isinstance(version, int) and op in ("put", "remove")):
        raise FrameError(ERR_BAD_FRAME, f"malformed op {row[:6]!r}")
    return (op_id, bucket, op, entity, rid, version, attrs)


def _checkpoint(obj: dict[str, Any]) -> Checkpoint:
    return Checkpoint(cursor=int(obj["cursor"]), checksums={str(k): int(v) for k, v in obj["checksums"].items()})


def decode_server(raw: bytes | bytearray | memoryview | str) -> ServerFrame:
    """Parse one server frame (the SDK's edge); raises FrameError."""
    obj = _load(raw)
    t = obj["type"]
    try:
        if t == "ops":
            resume = obj.get("resume")
            cp = obj.get("checkpoint")
            return Ops(
                ops=[_op_row(r) for r in obj["ops"]],
                done=int(obj["done"]),
                total=int(obj["total"]),
                resume=None if resume is None else int(resume),
                checkpoint=None if cp is None else _checkpoint(cp),
            )
        if t == "checkpoint":
            return _checkpoint(obj)
        if t == "welcome":
            return Welcome(
                user_id=obj["user_id"],
                buckets=tuple(obj["buckets"]),
                heartbeat_s=float(obj["heartbeat_s"]),
                limits=dict(obj["limits"]),
                version=int(obj["version"]),
                sync_intervals={str(k): int(v) for k, v in (obj.get("sync_intervals") or {}).items()},
            )
        if t == "result":
            return Result(
                batch_id=obj["batch_id"],
                results=tuple(
                    ChangeResult(
                        seq=int(r["seq"]),
                        entity=r["entity"],
                        id=r["id"],
                        status=r["status"],
                        version=r.get("version"),
                        record=r.get("record"),
                        code=r.get("code"),
                        message=r.get("message"),
                    )
                    for r in obj["results"]
                ),
            )
        if t == "error":
            return Error(
                code=obj["code"], message=obj["message"], ref=obj.get("ref"), retry_after=obj.get("retry_after")
            )
        if t == "metadata":
            entities = obj["entities"]
            if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
                raise FrameError(ERR_BAD_FRAME, "'entities' must be a list of objects", "entities")
            return Metadata(entities=tuple(entities))
        if t == "drop":
            return Drop(buckets=_buckets(obj), reason=obj.get("reason", "removed"))
        if t == "reset":
            return Reset(buckets=_buckets(obj))
        if t == "ping":
            return Ping(t=_num(obj, "t"))
        if t == "pong":
            return Pong(t=_num(obj, "t"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, FrameError):
            raise
        raise FrameError(ERR_BAD_FRAME, f"malformed {t} frame: {exc}") from None
    raise FrameError(ERR_UNKNOWN_TYPE, f"unknown frame type {t[:40]!r}", "type")
