"""Prometheus metrics shared by every service (each process has its own registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_HANDLED = Counter("offsync_events_handled_total", "Events handled by a consumer", ["consumer", "type"])
DEAD_LETTERS = Counter("offsync_dead_letters_total", "Messages parked on the dead-letter topic", ["consumer"])
OUTBOX_PUBLISHED = Counter("offsync_outbox_published_total", "Outbox rows published", ["schema"])
OUTBOX_BACKLOG = Gauge("offsync_outbox_backlog", "Outbox rows not yet published", ["schema"])
OUTBOX_OLDEST_AGE = Gauge(
    "offsync_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row (0 when none)", ["schema"]
)
CONSUMER_LAG = Gauge(
    "offsync_consumer_lag_messages",
    "Messages between a consumer's position and the partition's end, as of its last fetch",
    ["consumer", "topic", "partition"],
)
HTTP_REQUESTS = Counter(
    "offsync_http_requests_total",
    "HTTP requests by route template and status",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "offsync_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CONNECTED_DEVICES = Gauge("offsync_connected_devices", "Devices connected to this gateway")
# Publish lag is stage "record_commit_to_op" (a record's commit to its bucket op, publish-service).
LATENCY = Histogram("offsync_stage_seconds", "Latency of a processing stage", ["stage"])

# Device gateway (sync-service): what an operator watches besides connected devices.
OPS_DELIVERED = Counter("offsync_sync_ops_delivered_total", "Record ops sent to devices")
UPLOADS_ANSWERED = Counter("offsync_sync_uploads_answered_total", "Uploaded change batches answered to devices")
SYNC_CLOSES = Counter(
    "offsync_sync_closes_total", "Device connections the gateway closed (refusals and ends), by close code", ["code"]
)
