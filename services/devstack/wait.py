"""`python -m services.devstack.wait kafka [warehouse]`: block until the named dependencies answer."""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections.abc import Callable

from services.common.kafka import broker_reachable
from services.common.settings import ClickHouseSettings, KafkaSettings


def _kafka_up() -> bool:
    return broker_reachable(KafkaSettings(), timeout=1.0)


def _warehouse_up() -> bool:
    settings = ClickHouseSettings()
    scheme = "https" if settings.secure else "http"
    try:
        with urllib.request.urlopen(  # noqa: S310 - the configured ClickHouse URL
            f"{scheme}://{settings.host}:{settings.port}/ping", timeout=1
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


CHECKS: dict[str, Callable[[], bool]] = {"kafka": _kafka_up, "warehouse": _warehouse_up}


def wait_for(names: list[str], timeout: float) -> list[str]:
    """Poll the named checks until all pass or ``timeout`` seconds pass; returns those still down."""
    pending = list(names)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [name for name in pending if not CHECKS[name]()]
        if pending:
            time.sleep(0.5)
    return pending


def main(argv: list[str] | None = None) -> int:
    """Exit 0 once every named dependency answers, 1 (with a message) after the timeout."""
    parser = argparse.ArgumentParser(prog="python -m services.devstack.wait")
    parser.add_argument("names", nargs="+", choices=sorted(CHECKS))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    args = parser.parse_args(argv)
    down = wait_for(args.names, args.timeout)
    if down:
        print(f"still not reachable after {args.timeout:.0f}s: {', '.join(down)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
