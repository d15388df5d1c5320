"""Payloads of ``offsync.records.v1``: every committed record change.

Producers send ``RecordsChanged``: the records one transaction wrote, in chunks (key: the first
record's ``entity:record id``). An upload storm's poll writes thousands of records; one event,
outbox row, broker record and decode per record was a large share of its cost. A record's
versions can therefore travel in different partitions, so consumers must not rely on their
order: publish-service is state-based (docs/buckets.md). ``RecordChanged`` (one record, key
``entity:record id``) is what earlier versions sent; consumers still take it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import orjson
from pydantic import Field

from offsync_shared.envelope import Envelope
from offsync_shared.events import Event, register

MAX_RECORDS_PER_EVENT = 500  # a consumer's poll of 500 events stays a bounded amount of work
MAX_EVENT_BYTES = 512 * 1024  # the producer's batch size; one larger record travels alone


@register
class RecordChanged(Event):
    TYPE = "record.changed"
    entity: str
    id: str
    version: int = Field(description="Version after this change; strictly increasing per record.")
    deleted: bool = False
    owner_id: str | None = Field(None, description="Owning user or team id.")
    owner_type: Literal["user", "team"] | None = None
    business_unit_id: str | None = Field(None, description="Owning business unit.")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Full current attribute values.")
    committed_at: float = Field(description="Server commit time, unix seconds (latency measurement).")
    source: dict[str, Any] = Field(default_factory=dict, description="{'device_id','batch_id'} or {'api': user id}.")


@register
class RecordsChanged(Event):
    TYPE = "records.changed"
    records: list[RecordChanged] = Field(description="Records written by one transaction, each as RecordChanged.")


def change_payload(
    entity: str,
    record_id: str,
    version: int,
    deleted: bool,
    owner_id: str | None,
    owner_type: str | None,
    business_unit_id: str | None,
    attributes: dict[str, Any],
    committed_at: float,
    source: dict[str, Any],
) -> dict[str, Any]:
    """A RecordChanged payload as ``RecordChanged(...).model_dump(mode="json")`` gives it (keys in
    its order), built without the model: an upload poll or an import builds one per record, and
    every value is already of its field's JSON type there."""
    return {
        "entity": entity,
        "id": record_id,
        "version": version,
        "deleted": deleted,
        "owner_id": owner_id,
        "owner_type": owner_type,
        "business_unit_id": business_unit_id,
        "attributes": attributes,
        "committed_at": committed_at,
        "source": source,
    }


def changes_of(events: Iterable[Event]) -> list[RecordChanged]:
    """Every record change the events carry, in order (either event type)."""
    out: list[RecordChanged] = []
    for e in events:
        if isinstance(e, RecordsChanged):
            out.extend(e.records)
        elif isinstance(e, RecordChanged):
            out.append(e)
    return out


def envelopes(
    payloads: Iterable[dict[str, Any]],
    occurred_at: str,
    *,
    max_records: int = MAX_RECORDS_PER_EVENT,
    max_bytes: int = MAX_EVENT_BYTES,
) -> Iterator[Envelope]:
    """``RecordsChanged`` envelopes carrying ``payloads`` (each a RecordChanged payload as
    ``model_dump(mode="json")`` gives it) in order, at most ``max_records`` and ``max_bytes`` of
    record JSON in each (a record larger than that alone). Each record is encoded once, here;
    the envelope embeds those bytes."""
    chunk: list[orjson.Fragment] = []
    key = ""  # the chunk's first record's
    size = 0
    for p in payloads:
        raw = orjson.dumps(p)
        if chunk and (len(chunk) >= max_records or size + len(raw) + 1 > max_bytes):  # +1: its comma
            yield _envelope(key, chunk, occurred_at)
            chunk, size = [], 0
        if not chunk:
            key = f"{p['entity']}:{p['id']}"
        chunk.append(orjson.Fragment(raw))
        size += len(raw) + 1
    if chunk:
        yield _envelope(key, chunk, occurred_at)


def _envelope(key: str, chunk: list[orjson.Fragment], occurred_at: str) -> Envelope:
    return Envelope(RecordsChanged.TYPE, key, {"records": chunk}, RecordsChanged.VERSION, occurred_at=occurred_at)
