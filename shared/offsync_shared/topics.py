"""Names of every Kafka topic Offsync uses, and who keys them how (the key fixes ordering)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    key: str  # what the message key is; all messages with one key stay in order
    doc: str

    def full(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"


ADMIN = Topic("offsync.admin.v1", "org id", "Admin changes: org settings, org model, profile publishes.")
RECORDS = Topic(
    "offsync.records.v1",
    "entity:record id (of the event's first record)",
    "Committed record changes (create/update/delete), one event per writing transaction.",
)
SYNC_NOTIFY = Topic("offsync.sync-notify.v1", "bucket id", "Buckets that got new ops, with their newest op id.")
DEVICE_BATCHES = Topic("offsync.device-batches.v1", "device id", "Offline change batches uploaded by devices.")
BATCH_RESULTS = Topic("offsync.batch-results.v1", "device id", "Per-change outcome of each applied batch.")
DEAD_LETTER = Topic("offsync.dead-letter.v1", "source topic", "Messages a consumer could not decode or handle.")

ALL_TOPICS: tuple[Topic, ...] = (ADMIN, RECORDS, SYNC_NOTIFY, DEVICE_BATCHES, BATCH_RESULTS, DEAD_LETTER)
