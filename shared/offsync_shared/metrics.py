"""Prometheus metrics shared by every service (each process has its own registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_HANDLED = Counter("offsync_events_handled_total", "Events handled by a consumer", ["consumer", "type"])
DEAD_LETTERS = Counter("offsync_dead_letters_total", "Messages parked on the dead-letter topic", ["consumer"])
OUTBOX_PUBLISHED = Counter("offsync_outbox_published_total", "Outbox rows published", ["schema"])
HTTP_REQUESTS = Counter("offsync_http_requests_total", "HTTP requests", ["service", "status"])
CONNECTED_DEVICES = Gauge("offsync_connected_devices", "Devices connected to this gateway")
LATENCY = Histogram("offsync_stage_seconds", "Latency of a processing stage", ["stage"])
