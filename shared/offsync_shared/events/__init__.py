"""Payload schemas, one module per topic. Decode at the edge with :func:`decode`; nothing past
the edge handles a raw dict."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from offsync_shared.envelope import Envelope, EnvelopeError


class Event(BaseModel):
    """Base of every payload: frozen; unknown fields are ignored so producers can add fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str] = ""  # the envelope type, set by each subclass
    VERSION: ClassVar[int] = 1

    def envelope(self, key: str) -> Envelope:
        return Envelope(type=self.TYPE, key=key, schema_version=self.VERSION, payload=self.model_dump(mode="json"))


E = TypeVar("E", bound=Event)

_REGISTRY: dict[str, type[Event]] = {}


def register(cls: type[E]) -> type[E]:
    _REGISTRY[cls.TYPE] = cls
    return cls


class UnknownEvent(EnvelopeError):
    """An envelope whose type or schema version no schema here knows."""


def decode(env: Envelope) -> Event:
    cls = _REGISTRY.get(env.type)
    if cls is None:
        raise UnknownEvent(f"unknown event type {env.type!r}")
    if env.schema_version != cls.VERSION:
        raise UnknownEvent(f"{env.type} schema_version {env.schema_version} not supported")
    try:
        return cls.model_validate(env.payload)
    except ValidationError as exc:
        raise EnvelopeError(f"invalid {env.type} payload: {exc.errors()[:3]}") from None
