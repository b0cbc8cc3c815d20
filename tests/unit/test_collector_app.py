"""The collector app with an in-memory publisher: spooling and ordered replay, answers, OpenAPI, limits."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from services.collector.app import create_app
from services.collector.events import Problem, decode_event, problem_from_error
from services.collector.limits import TokenBucket, origin_allowed, retry_after_seconds
from services.collector.settings import CollectorSettings, WriteKey
from services.common.avro import AvroCodec
from services.common.errors import UnavailableError

KEY = {"X-Write-Key": "dev-write-key"}
RAW = AvroCodec.for_topic("events.raw")


class FakePublisher:
    """Acknowledges everything, or nothing while ``down``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | bytes | None, bytes]] = []
        self.down = False
        self.closed = False

    async def publish_many(
        self, messages: Sequence[tuple[str, str | bytes | None, bytes]]
    ) -> list[Exception | None]:
        if self.down:
            return [UnavailableError("down") for _ in messages]
        self.sent.extend(messages)
        return [None] * len(messages)

    def close(self, timeout: float = 10.0) -> int:
        self.closed = True
        return 0

    def raw_ids(self) -> list[str]:
        return [RAW.decode(v)["event_id"] for t, _, v in self.sent if t == "events.raw"]


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(publisher: FakePublisher, tmp_path: Path) -> Iterator[TestClient]:
    settings = CollectorSettings(
        spool_dir=tmp_path / "spool",
        write_keys={
            "dev-write-key": WriteKey(site_id="dev"),
            "tiny": WriteKey(site_id="tiny", rate_limit_per_second=1),
        },
    )
    with TestClient(create_app(settings, publisher)) as test_client:
        yield test_client
    assert publisher.closed  # graceful shutdown flushed and closed the producer


def _wait(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_acknowledged_is_200_and_spooled_is_202_then_replayed_in_order(
    client: TestClient, publisher: FakePublisher
) -> None:
    ok = client.post(
        "/v1/events", json={"type": "pageview", "anonymous_id": "a", "event_id": "e0"}, headers=KEY
    )
    assert ok.status_code == 200
    publisher.down = True
    for i in range(1, 6):
        response = client.post(
            "/v1/events",
            json={"type": "pageview", "anonymous_id": "a", "event_id": f"e{i}"},
            headers=KEY,
        )
        assert response.status_code == 202, response.text
        assert response.json()["event_ids"] == [f"e{i}"]
    ready = client.get("/readyz").json()
    assert ready["broker_reachable"] is False and ready["spool_bytes"] > 0 and ready["ready"]
    publisher.down = False
    _wait(lambda: client.get("/readyz").json()["spool_bytes"] == 0)
    assert publisher.raw_ids() == [f"e{i}" for i in range(6)]
    metrics = client.get("/metrics").text
    assert "collector_events_spooled_total 5.0" in metrics
    assert "collector_events_replayed_total 5.0" in metrics


def test_rate_limit_per_key(client: TestClient) -> None:
    headers = {"X-Write-Key": "tiny"}
    first = client.post(
        "/v1/events", json={"type": "pageview", "anonymous_id": "a"}, headers=headers
    )
    second = client.post(
        "/v1/events", json={"type": "pageview", "anonymous_id": "a"}, headers=headers
    )
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    assert (
        client.post(
            "/v1/events", json={"type": "pageview", "anonymous_id": "a"}, headers=KEY
        ).status_code
        == 200
    )


def test_openapi_documents_the_hot_path(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    events = schema["paths"]["/v1/events"]["post"]
    assert set(events["responses"]) >= {"200", "202", "400", "401", "413", "415", "429", "503"}
    assert set(events["requestBody"]["content"]) == {"application/json", "text/plain"}
    event = schema["components"]["schemas"]["Event"]
    assert event["additionalProperties"] is False
    assert event["required"] == ["type", "anonymous_id"]
    assert schema["components"]["schemas"]["Batch"]["properties"]["batch"]["maxItems"] == 500
    assert {"/v1/p.gif", "/v1/tracker.js", "/healthz", "/readyz", "/metrics"} <= set(
        schema["paths"]
    )


def test_tracker_is_served_with_the_snippet_api(client: TestClient) -> None:
    script = client.get("/v1/tracker.js")
    assert script.status_code == 200
    for name in ("identify", "track", "consent", "sendBeacon", "keepalive", "_cl_aid"):
        assert name in script.text


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"type":"pageview","anonymous_id":"a","x":1}', "x", "unknown field"),
        (b'{"type":"pageview"}', "anonymous_id", "required field is missing"),
        (
            b'{"type":"pageview","anonymous_id":"a","click_ids":{"zz":"1"}}',
            "click_ids.zz",
            "unknown field",
        ),
        (
            b'{"type":"pageview","anonymous_id":"a","traits":{"a":1},"currency":"EURO"}',
            "currency",
            None,
        ),
        (
            b'{"type":"pageview","anonymous_id":"' + b"a" * 129 + b'"}',
            "anonymous_id",
            "Expected `str` of length <= 128",
        ),
    ],
)
def test_decode_errors_name_the_field(body: bytes, field: str, message: str | None) -> None:
    with pytest.raises(Exception) as info:
        decode_event(body)
    problem = problem_from_error(info.value)
    assert isinstance(problem, Problem)
    assert problem.field == field
    if message:
        assert problem.message == message


def test_token_bucket_allows_bursts_then_waits() -> None:
    bucket = TokenBucket.full(rate=10, now=0.0)
    assert bucket.take(10, now=0.0) == 0.0
    assert bucket.take(1, now=0.0) == pytest.approx(0.1)
    assert bucket.take(1, now=0.1) == 0.0
    big = TokenBucket.full(rate=10, now=0.0)
    assert big.take(100, now=0.0) == 0.0  # a batch larger than the burst borrows ahead
    assert big.take(1, now=1.0) > 0  # ... and pays it back
    assert retry_after_seconds(0.01) == 1 and retry_after_seconds(2.2) == 3


@pytest.mark.parametrize(
    ("origin", "patterns", "allowed"),
    [
        ("https://a.example.com", ("*",), True),
        ("https://shop.example.com", ("https://shop.example.com",), True),
        ("https://shop.example.com/", ("https://SHOP.example.com",), True),
        ("http://shop.example.com", ("https://shop.example.com",), False),
        ("https://x.example.org", ("https://*.example.org",), True),
        ("https://example.org", ("https://*.example.org",), False),
        ("https://evilexample.org", ("https://*.example.org",), False),
        ("https://x.example.org:8443", ("https://*.example.org",), True),
    ],
)
def test_origins(origin: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert origin_allowed(origin, patterns) is allowed
