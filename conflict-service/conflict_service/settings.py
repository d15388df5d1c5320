"""Settings of conflict-service (env: OFFSYNC_...)."""

from __future__ import annotations

from offsync_shared.settings import CommonSettings


class Settings(CommonSettings):
    """Everything in CommonSettings plus conflict-service's own knobs."""

    # Run the device-batch consumer in this process (off for an API-only replica).
    conflict_consumer: bool = True
    # Most device batches applied together in one transaction.
    conflict_max_batches_per_poll: int = 500

    @property
    def port(self) -> int:
        return self.conflict_port
