"""Settings of publish-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """Everything in CommonSettings plus the publish worker's knobs."""

    # Events handled per poll, in one transaction (throughput vs. per-batch latency).
    batch_max_records: int = 500

    @property
    def port(self) -> int:
        return self.publish_port
