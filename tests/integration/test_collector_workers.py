"""Several workers, each with its own producer; SIGTERM lets requests in flight finish and flushes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from services.common.settings import KafkaSettings
from tests.fixtures.collector import RunningCollector, read_topic

KEY = {"X-Write-Key": "dev-write-key"}


def test_two_workers_then_graceful_stop_loses_no_acknowledged_event(
    kafka_settings: KafkaSettings, start_collector: Callable[..., RunningCollector]
) -> None:
    collector = start_collector(kafka_settings, COLLECTOR_WORKERS="2")
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop_sent = threading.Event()

    def post(i: int) -> None:
        body = {
            "batch": [
                {"type": "pageview", "anonymous_id": f"w{i}", "event_id": f"w{i}-{j}"}
                for j in range(20)
            ]
        }
        try:
            response = httpx.post(f"{collector.url}/v1/events", json=body, headers=KEY, timeout=30)
        except httpx.HTTPError:
            assert stop_sent.is_set()  # refused only once the server is stopping
            return
        if response.status_code in (200, 202):
            with lock:
                acknowledged.extend(response.json()["event_ids"])

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, i) for i in range(150)]
        deadline = time.monotonic() + 60
        while len(acknowledged) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = httpx.get(f"{collector.url}/metrics", timeout=10).text
        stop_sent.set()
        collector.process.process.send_signal(15)  # type: ignore[union-attr]
        for future in futures:
            future.result()
    assert collector.process.process.wait(60) == 0  # type: ignore[union-attr]
    # Two workers wrote metrics; any worker's /metrics sums both.
    assert "collector_events_accepted_total" in metrics
    found = read_topic(
        kafka_settings,
        "events.raw",
        len(acknowledged),
        where=lambda r: r["event_id"].startswith("w"),
    )
    ids = {record["event_id"] for _, record in found}
    assert set(acknowledged) <= ids
    assert len(acknowledged) >= 1000
    assert collector.spool_dir.joinpath("slot-1").exists()  # each worker claimed its own spool
