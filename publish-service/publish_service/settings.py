"""Settings of publish-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings, ConsumerTuning


class Settings(CommonSettings):
    """Everything in CommonSettings plus the publish worker's knobs."""

    # Events handled per poll, in one transaction (throughput vs. per-batch latency).
    batch_max_records: int = 500
    # The records consumer's fetch wait; None = kafka_fetch_max_wait_ms. Every record change
    # rides on it (the embedded broker answers a held fetch only when the wait runs out).
    publish_fetch_wait_ms: int | None = None

    def consumer_tuning(self) -> ConsumerTuning:
        tuning = super().consumer_tuning()
        if self.publish_fetch_wait_ms is not None:
            tuning["fetch_max_wait_ms"] = self.publish_fetch_wait_ms
        return tuning

    @property
    def port(self) -> int:
        return self.publish_port
