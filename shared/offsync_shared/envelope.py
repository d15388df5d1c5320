"""The one event envelope every topic carries, serialized with orjson.

Wire format (JSON object): ``id`` (uuid str, unique per event, consumers dedupe on it),
``type`` (e.g. ``profile.published``), ``schema_version`` (int), ``occurred_at`` (RFC 3339),
``key`` (the partition key), ``payload`` (object, schema given by ``type``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


def new_id() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` gives it, for well under half
    the cost (0.8 µs against 2.0 here: no ``uuid.UUID`` object to build and format); an upload
    storm writes one envelope per uploaded change."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


class EnvelopeError(ValueError):
    """A message that is not a well-formed envelope."""


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    key: str
    payload: dict[str, Any]
    schema_version: int = 1
    id: str = field(default_factory=new_id)
    occurred_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "schema_version": self.schema_version,
                "occurred_at": self.occurred_at,
                "key": self.key,
                "payload": self.payload,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | None) -> Envelope:
        if raw is None:
            raise EnvelopeError("empty message")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise EnvelopeError("envelope must be a JSON object")
        try:
            env = cls(
                id=obj["id"],
                type=obj["type"],
                schema_version=obj["schema_version"],
                occurred_at=obj["occurred_at"],
                key=obj["key"],
                payload=obj["payload"],
            )
        except KeyError as exc:
            raise EnvelopeError(f"missing field {exc.args[0]}") from None
        if not (isinstance(env.id, str) and isinstance(env.type, str) and isinstance(env.key, str)):
            raise EnvelopeError("id, type and key must be strings")
        if not isinstance(env.schema_version, int) or not isinstance(env.payload, dict):
            raise EnvelopeError("schema_version must be an int and payload an object")
        return env
