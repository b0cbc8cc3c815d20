"""Run the stitcher: `python -m services.stitcher` (SIGTERM/SIGINT stop it gracefully)."""

from __future__ import annotations

import logging

from schemas.topics import EVENTS_RAW, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.common.kafka import ensure_topics
from services.common.logging import configure_logging
from services.stitcher.app import (
    build_worker,
    create_app,
    ensure_internal_topics,
    mark_clean_shutdown,
    prepare_local_state,
)
from services.stitcher.settings import get_settings

log = logging.getLogger("services.stitcher")


def main() -> None:
    """Create the topics if missing, then run one faust worker until it is stopped."""
    settings = get_settings()
    configure_logging(settings.log_level)
    ensure_topics(settings.kafka, (EVENTS_RAW, IDENTITY_LINKS, TOUCHPOINTS_STITCHED))
    app = create_app(settings)
    ensure_internal_topics(app, settings)
    log.info(
        "stitcher starting",
        extra={
            "bootstrap_servers": settings.kafka.bootstrap_servers,
            "group": app.conf.id,
            "processing_guarantee": settings.processing_guarantee,
            "store": settings.store,
        },
    )
    prepare_local_state(app, settings)
    try:
        build_worker(app, settings).execute_from_commandline()
    except SystemExit as stop:
        if stop.code in (0, None):
            mark_clean_shutdown(settings)
        raise


if __name__ == "__main__":
    main()
