"""Wait until every process of the local stack answers, print the endpoints, then idle until stopped."""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.common.kafka import broker_reachable
from services.common.settings import PROJECT_ROOT, ClickHouseSettings, KafkaSettings


@dataclass(frozen=True)
class Endpoint:
    """One thing a person can talk to: a name, an address and how to tell it is up."""

    process: str
    name: str
    address: str
    health_url: str | None


def _http_settings(module: str, class_name: str) -> tuple[str, int] | None:
    try:
        settings = getattr(importlib.import_module(module), class_name)()
    except ModuleNotFoundError:
        return None
    return str(settings.host), int(settings.port)


def endpoints(procfile: Path = PROJECT_ROOT / "Procfile") -> list[Endpoint]:
    """The endpoints of the processes the Procfile runs."""
    processes = {
        line.split(":", 1)[0].strip() for line in procfile.read_text().splitlines() if ":" in line
    }
    found: list[Endpoint] = []
    if "broker" in processes:
        found.append(Endpoint("broker", "Kafka broker", KafkaSettings().bootstrap_servers, None))
    if "warehouse" in processes:
        ch = ClickHouseSettings()
        base = f"http://{ch.host}:{ch.port}"
        found.append(Endpoint("warehouse", "ClickHouse HTTP (embedded)", base, f"{base}/ping"))
    for process, name, module, class_name in (
        ("collector", "Collector", "services.collector.settings", "CollectorSettings"),
        ("crm_ingest", "CRM webhooks", "services.crm_ingest.settings", "CrmIngestSettings"),
    ):
        address = _http_settings(module, class_name) if process in processes else None
        if address:
            base = f"http://{address[0]}:{address[1]}"
            found.append(Endpoint(process, name, base, f"{base}/healthz"))
    return found


def _up(endpoint: Endpoint) -> bool:
    if endpoint.health_url is None:
        return broker_reachable(KafkaSettings(), timeout=1.0)
    try:
        with urllib.request.urlopen(endpoint.health_url, timeout=1) as response:  # noqa: S310 - local URL
            return bool(200 <= response.status < 300)
    except OSError:
        return False


def main() -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    pending = endpoints()
    started = time.monotonic()
    while pending and not stop.is_set():
        pending = [e for e in pending if not _up(e)]
        if pending and time.monotonic() - started > 180:
            print(f"still waiting for: {', '.join(e.process for e in pending)}", flush=True)
            started = time.monotonic()
        stop.wait(0.5)
    if stop.is_set():
        return 0
    lines = ["", "closedloop is up:"]
    lines += [f"  {e.name:<28} {e.address}" for e in endpoints()]
    collector = next((e for e in endpoints() if e.process == "collector"), None)
    if collector is not None:
        lines += [
            "",
            "Send a first event:",
            f"  curl -s -X POST {collector.address}/v1/events -H 'X-Write-Key: dev-write-key' \\",
            "    -H 'Content-Type: application/json' \\",
            """    -d '{"type":"pageview","anonymous_id":"a-1","url":"https://example.com/?utm_source=google&utm_medium=cpc"}'""",
        ]
    lines += ["", "Ctrl-C stops everything.", ""]
    print("\n".join(lines), flush=True)
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
