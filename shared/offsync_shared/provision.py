"""``python -m offsync_shared.provision``: creates every topic as topics.yaml defines it and warns
about existing topics whose settings differ; the deploy files' one-shot provisioning step (the
services also do it at start, so it is a head start and a check, not a prerequisite)."""

from __future__ import annotations

import asyncio
import logging

from offsync_shared import bus
from offsync_shared.logs import configure
from offsync_shared.settings import CommonSettings


def main() -> None:
    settings = CommonSettings.from_env()
    configure("provision", settings.log_level)
    created = asyncio.run(
        bus.ensure_topics(
            settings.kafka_bootstrap,
            settings.topic_prefix,
            settings.topic_partitions,
            timeout=120.0,
            replication_factor=settings.topic_replication_factor,
            check_existing=True,
        )
    )
    logging.getLogger("offsync.provision").info("topics provisioned", extra={"created": created})


if __name__ == "__main__":
    main()
