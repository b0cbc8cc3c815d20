"""Run the crm_ingest: `python -m services.crm_ingest` (SIGTERM/SIGINT stop it gracefully)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from schemas.topics import CRM_DEAL_STAGES, CRM_INVALID
from services.common.errors import ClosedloopError
from services.common.kafka import ensure_topics
from services.common.logging import configure_logging
from services.crm_ingest.app import create_app
from services.crm_ingest.settings import get_settings

log = logging.getLogger("services.crm_ingest")


class _Server(uvicorn.Server):
    """uvicorn, but a SIGTERM/SIGINT stop exits 0 instead of re-raising the signal."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Create the topics if the broker answers, then serve until SIGTERM/SIGINT.

    A broker that is down at start does not stop the service: webhooks answer 503
    with Retry-After until it is back, so the CRMs retry.
    """
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        ensure_topics(settings.kafka, (CRM_DEAL_STAGES, CRM_INVALID), timeout=10.0)
    except ClosedloopError as exc:
        log.warning("topics not checked at start", extra={"problem": str(exc)})
    try:
        app = create_app(settings)
    except ClosedloopError as exc:
        log.error("crm_ingest cannot start", extra={"problem": str(exc)})
        return 2
    log.info(
        "crm_ingest starting",
        extra={
            "host": settings.host,
            "port": settings.port,
            "bootstrap_servers": settings.kafka.bootstrap_servers,
        },
    )
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown: in-flight requests finish,
    # then the lifespan flushes and closes the producer.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )
    _Server(config).run()
    log.info("crm_ingest stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
