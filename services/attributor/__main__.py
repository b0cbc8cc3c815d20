"""Run the attributor: `python -m services.attributor` (SIGTERM/SIGINT stop it gracefully)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from schemas.topics import CRM_DEAL_STAGES, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.attributor.settings import get_settings
from services.attributor.worker import build_worker
from services.common.errors import ClosedloopError
from services.common.kafka import ensure_topics
from services.common.logging import configure_logging

log = logging.getLogger("services.attributor")


def main(argv: list[str] | None = None) -> int:
    """Create missing topics, then consume, attribute and write until SIGTERM/SIGINT."""
    del argv
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        ensure_topics(settings.kafka, (IDENTITY_LINKS, TOUCHPOINTS_STITCHED, CRM_DEAL_STAGES))
        worker = build_worker(settings)
    except ClosedloopError as exc:
        log.error("attributor cannot start", extra={"error": str(exc)})
        return 1

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "attributor starting",
        extra={
            "bootstrap_servers": settings.kafka.bootstrap_servers,
            "group": settings.consumer_group,
            "clickhouse": f"{settings.clickhouse.host}:{settings.clickhouse.port}",
        },
    )
    try:
        worker.run()
    except ClosedloopError as exc:
        log.error("attributor stopped on error", extra={"error": str(exc)})
        return 1
    finally:
        worker.close()
    log.info("attributor stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
