"""Broker outages: the collector spools to disk (202), replays in order once the broker is back,
survives its own crash in between, and answers 503 with Retry-After when the spool is full."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from services.broker.local import LocalKafka, free_port, java_available
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from tests.conftest import unique_prefix
from tests.fixtures.collector import RunningCollector, read_topic

KEY = {"X-Write-Key": "dev-write-key"}


@pytest.fixture(scope="module")
def outage_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module alone, so stopping it leaves the session broker alone."""
    assert java_available(), "this test needs the Apache Kafka broker (Java 17+)"
    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("outage-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def own_broker(outage_broker: LocalKafka) -> LocalKafka:
    """The module's broker, running (a failed test may have left it stopped)."""
    if outage_broker.process is None or outage_broker.process.poll() is not None:
        outage_broker.start()
    return outage_broker


def _kafka(broker: LocalKafka) -> KafkaSettings:
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, topic_prefix=unique_prefix(), partitions=3
    )
    ensure_topics(kafka)
    return kafka


def _send(url: str, events: list[dict]) -> list[int]:
    """Send 100-event batches and single events concurrently; the statuses, one per request."""
    batches = [{"batch": events[i : i + 100]} for i in range(0, len(events) // 2, 100)]
    singles = events[len(events) // 2 :]

    def post(body: dict) -> int:
        with httpx.Client(timeout=60) as client:
            return client.post(f"{url}/v1/events", json=body, headers=KEY).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, [*batches, *singles]))


def _event(i: int) -> dict:
    return {"type": "pageview", "anonymous_id": f"visitor-{i % 37}", "event_id": f"outage-{i}"}


def _wait_ready(url: str, predicate: Callable[[dict], bool], timeout: float = 60.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(f"{url}/readyz", timeout=5).json()
        if predicate(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_broker_outage_spools_then_replays_every_event_once(
    own_broker: LocalKafka, start_collector: Callable[..., RunningCollector]
) -> None:
    kafka = _kafka(own_broker)
    collector = start_collector(kafka, COLLECTOR_PUBLISH_TIMEOUT_MS="2000")
    warmup = _send(collector.url, [_event(i) | {"event_id": f"warm-{i}"} for i in range(4)])
    assert set(warmup) == {200}

    own_broker.stop()
    events = [_event(i) for i in range(1000)]
    statuses = _send(collector.url, events)
    assert Counter(statuses) == {202: len(statuses)}
    spooling = _wait_ready(collector.url, lambda b: b["spool_bytes"] > 0)
    assert spooling["ready"] is True and spooling["broker_reachable"] is False

    own_broker.start()
    drained = _wait_ready(collector.url, lambda b: b["spool_bytes"] == 0 and b["broker_reachable"])
    assert drained["spool_bytes"] == 0, drained

    found = read_topic(
        kafka, "events.raw", 1000, where=lambda r: r["event_id"].startswith("outage-"), settle=3.0
    )
    ids = Counter(record["event_id"] for _, record in found)
    assert set(ids) == {e["event_id"] for e in events}
    assert [event_id for event_id, n in ids.items() if n > 1] == []
    assert all(key == record["anonymous_id"].encode() for key, record in found)
    metrics = httpx.get(f"{collector.url}/metrics").text
    assert "collector_events_spooled_total 1000.0" in metrics
    assert "collector_events_replayed_total 1000.0" in metrics


def test_spool_survives_a_collector_crash(
    own_broker: LocalKafka, start_collector: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    kafka = _kafka(own_broker)
    spool = tmp_path / "shared-spool"
    first = start_collector(
        kafka, COLLECTOR_PUBLISH_TIMEOUT_MS="2000", COLLECTOR_SPOOL_DIR=str(spool)
    )
    own_broker.stop()
    events = [_event(i) | {"event_id": f"crash-{i}"} for i in range(200)]
    assert set(_send(first.url, events)) == {202}
    first.process.kill()  # SIGKILL: only what the spool fsync'd survives

    own_broker.start()
    second = start_collector(kafka, COLLECTOR_SPOOL_DIR=str(spool))
    found = read_topic(
        kafka, "events.raw", 200, where=lambda r: r["event_id"].startswith("crash-"), settle=3.0
    )
    assert sorted(r["event_id"] for _, r in found) == sorted(e["event_id"] for e in events)
    assert _wait_ready(second.url, lambda b: b["spool_bytes"] == 0)["spool_bytes"] == 0


def test_full_spool_answers_503_with_retry_after(
    start_collector: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    collector = start_collector(
        nowhere, COLLECTOR_SPOOL_MAX_BYTES="4096", COLLECTOR_PUBLISH_TIMEOUT_MS="1000"
    )
    statuses: list[httpx.Response] = []
    with httpx.Client(base_url=collector.url, timeout=30) as client:
        for i in range(100):
            response = client.post("/v1/events", json=_event(i), headers=KEY)
            statuses.append(response)
            if response.status_code == 503:
                break
        assert {r.status_code for r in statuses[:-1]} == {202}
        full = statuses[-1]
        assert full.status_code == 503, [r.status_code for r in statuses]
        assert int(full.headers["retry-after"]) >= 1
        error = full.json()["error"]
        assert (error["status"], error["reason"]) == (503, "unavailable")
        assert "spool full" in error["problem"]
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["spool_has_room"] is False
