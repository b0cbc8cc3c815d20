"""Run the collector: ``python -m services.collector`` (uvicorn, several workers, graceful SIGTERM)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from types import FrameType

import uvicorn

from services.collector.settings import get_settings
from services.common.logging import configure_logging


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve the collector until SIGTERM/SIGINT; each worker flushes its producer on the way out."""
    parser = argparse.ArgumentParser(prog="python -m services.collector", description=__doc__)
    parser.add_argument("--workers", type=int, help="override COLLECTOR_WORKERS")
    args = parser.parse_args(argv)
    settings = get_settings()
    workers = args.workers or settings.workers
    configure_logging(settings.log_level)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metrics here, so /metrics on any worker sums all of them.
        metrics_dir = settings.spool_dir / f"metrics-{settings.port}"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; exiting 0 then says "clean stop".
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    uvicorn.run(
        "services.collector.app:app_from_environment",
        factory=True,
        http="services.collector.http:CoalescingHttpToolsProtocol",
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=20,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is read by the app, only when trusted
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
