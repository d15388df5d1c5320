"""Offsync device SDK: a local SQLite store of the user's records, an outbox of offline changes,
and a client that syncs them over the /v1/sync websocket protocol."""

from offsync_device.backoff import Backoff
from offsync_device.client import Device, SyncReport
from offsync_device.local_store import LocalStore

__all__ = ["Backoff", "Device", "LocalStore", "SyncReport"]
