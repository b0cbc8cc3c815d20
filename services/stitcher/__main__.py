"""Run the stitcher: `python -m services.stitcher` (SIGTERM/SIGINT stop it gracefully)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from schemas.topics import EVENTS_RAW, IDENTITY_LINKS, STITCHER_STATE, TOUCHPOINTS_STITCHED
from services.common.errors import ClosedloopError
from services.common.kafka import ensure_topics
from services.common.logging import configure_logging
from services.stitcher.settings import get_settings
from services.stitcher.worker import StitcherWorker

log = logging.getLogger("services.stitcher")


def main(argv: list[str] | None = None) -> int:
    """Create the topics if missing, then stitch until SIGTERM/SIGINT."""
    settings = get_settings()
    configure_logging(settings.log_level)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        ensure_topics(
            settings.kafka, (EVENTS_RAW, IDENTITY_LINKS, TOUCHPOINTS_STITCHED, STITCHER_STATE)
        )
        log.info(
            "stitcher starting",
            extra={
                "bootstrap_servers": settings.kafka.bootstrap_servers,
                "group": settings.kafka.topic(settings.consumer_group),
            },
        )
        StitcherWorker(settings, stop_requested=stop.is_set).run()
    except ClosedloopError as exc:
        log.error("stitcher failed", extra={"error": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
