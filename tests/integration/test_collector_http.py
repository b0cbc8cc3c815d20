"""The collector over real HTTP into the real broker: every event kind arrives as sent plus enrichment,
every error status comes with a JSON body naming the field and the problem."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services.broker.local import free_port
from services.common.kafka import ensure_topics
from services.common.settings import KafkaSettings
from tests.conftest import unique_prefix
from tests.fixtures.collector import RunningCollector, collector_env
from tests.fixtures.processes import ServiceProcess, http_ok

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
KEY = {"X-Write-Key": "dev-write-key"}


@pytest.fixture(scope="module")
def running(
    bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningCollector]:
    """One collector for the module (each test uses fresh anonymous IDs and filters by them)."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers, topic_prefix=unique_prefix())
    ensure_topics(kafka)
    tmp = tmp_path_factory.mktemp("collector")
    port = free_port()
    process = ServiceProcess(
        "services.collector", collector_env(kafka, port, tmp / "spool"), tmp / "collector.log"
    )
    url = f"http://127.0.0.1:{port}"
    process.start(ready=http_ok(f"{url}/readyz"), timeout=60)
    try:
        yield RunningCollector(process, url, kafka, tmp / "spool")
    finally:
        assert process.stop(timeout=30) == 0, process.tail()


@pytest.fixture
def client(running: RunningCollector) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as http:
        yield http


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_single_event_arrives_as_sent_plus_enrichment(
    running: RunningCollector, client: httpx.Client
) -> None:
    event = {
        "type": "conversion",
        "anonymous_id": "anon-single",
        "event_id": "evt-single-1",
        "session_id": "sess-1",
        "timestamp": "2026-01-10T10:00:00+01:00",
        "sent_at": "2026-01-10T10:00:05+01:00",
        "url": "https://www.example.com/thanks?utm_source=google&utm_medium=cpc&gclid=CjwKC",
        "title": "Thanks",
        "referrer": "https://www.google.com/",
        "utm_campaign": "brand",
        "click_ids": {"fbclid": "IwAR1"},
        "event_name": "purchase",
        "properties": {"plan": "pro", "seats": 5, "trial": False},
        "value": "1250.50",
        "currency": "eur",
    }
    before = int(datetime.now(UTC).timestamp() * 1000)
    response = client.post("/v1/events", json=event, headers={**KEY, "User-Agent": CHROME})
    after = int(datetime.now(UTC).timestamp() * 1000)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "rejected": [], "event_ids": ["evt-single-1"]}

    [record] = running.raw(1, anonymous_id="anon-single")
    received = int(record.pop("received_at").timestamp() * 1000)
    assert before <= received <= after
    occurred = int(record.pop("occurred_at").timestamp() * 1000)
    # clock-skew correction: occurred = timestamp + (received - sent_at)
    assert occurred == _ms(event["timestamp"]) + received - _ms(event["sent_at"])
    assert record == {
        "event_id": "evt-single-1",
        "type": "conversion",
        "site_id": "dev",
        "anonymous_id": "anon-single",
        "session_id": "sess-1",
        "sent_at": datetime.fromisoformat(event["sent_at"]).astimezone(UTC),
        "url": event["url"],
        "title": "Thanks",
        "referrer": "https://www.google.com/",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "brand",
        "utm_term": None,
        "utm_content": None,
        "click_ids": {"gclid": "CjwKC", "fbclid": "IwAR1"},
        "event_name": "purchase",
        "email": None,
        "traits": {},
        "properties": {"plan": "pro", "seats": "5", "trial": "false"},
        "value": Decimal("1250.50"),
        "currency": "EUR",
        "ip": "127.0.0.0",
        "user_agent": CHROME,
        "browser": "Chrome",
        "os": "Windows",
        "device_type": "desktop",
        "is_bot": False,
    }


def test_batch_accepts_good_events_and_names_the_bad_ones(
    running: RunningCollector, client: httpx.Client
) -> None:
    good = [
        {
            "type": "pageview",
            "anonymous_id": "anon-batch",
            "event_id": f"b{i}",
            "url": f"https://e.com/{i}",
        }
        for i in range(3)
    ]
    bad_type = {"type": "teleport", "anonymous_id": "anon-batch"}
    bad_field = {
        "type": "identify",
        "anonymous_id": "anon-batch",
        "email": "x@y.z",
        "shoe_size": 44,
    }
    batch = [good[0], bad_type, good[1], bad_field, good[2]]
    basic = base64.b64encode(b"dev-write-key:").decode()
    response = client.post(
        "/v1/events",
        json={"batch": batch},
        headers={"Authorization": f"Basic {basic}", "User-Agent": GOOGLEBOT},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert body["event_ids"] == ["b0", "b1", "b2"]
    assert body["rejected"] == [
        {"index": 1, "field": "type", "problem": "Invalid enum value 'teleport'"},
        {"index": 3, "field": "shoe_size", "problem": "unknown field"},
    ]
    records = running.raw(3, anonymous_id="anon-batch")
    assert [r["event_id"] for r in records] == [
        "b0",
        "b1",
        "b2",
    ]  # one key, one partition: in order
    assert all(r["is_bot"] and r["device_type"] == "bot" for r in records)
    invalid = running.invalid(1, batch_index=1) + running.invalid(1, batch_index=3)
    assert sorted((r["batch_index"], r["field"], r["reason"]) for r in invalid) == [
        (1, "type", "invalid_field"),
        (3, "shoe_size", "invalid_field"),
    ]
    raws = {r["batch_index"]: json.loads(r["raw"]) for r in invalid}
    assert raws == {1: bad_type, 3: bad_field}
    assert {r["site_id"] for r in invalid} == {"dev"}


def test_beacon_text_plain_with_write_key_in_body(
    running: RunningCollector, client: httpx.Client
) -> None:
    event = {
        "type": "identify",
        "anonymous_id": "anon-beacon",
        "email": "Ada@Example.com",
        "traits": {"name": "Ada", "age": 36},
        "writeKey": "dev-write-key",
    }
    response = client.post(
        "/v1/events",
        content=json.dumps(event).encode(),
        headers={
            "Content-Type": "text/plain;charset=UTF-8",
            "Origin": "https://www.example.com",
            "X-Forwarded-For": "198.51.100.77",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "https://www.example.com"
    [record] = running.raw(1, anonymous_id="anon-beacon")
    assert record["type"] == "identify"
    assert record["email"] == "Ada@Example.com"
    assert record["traits"] == {"name": "Ada", "age": "36"}
    assert record["ip"] == "127.0.0.0"  # X-Forwarded-For is not trusted by default
    assert record["occurred_at"] == record["received_at"]
    assert len(record["event_id"]) == 36  # a UUID was assigned


def test_pixel_always_answers_the_gif(running: RunningCollector, client: httpx.Client) -> None:
    ok = client.get(
        "/v1/p.gif",
        params={
            "writeKey": "dev-write-key",
            "anonymous_id": "anon-pixel",
            "utm_source": "newsletter",
            "utm_medium": "email",
            "msclkid": "m-1",
            "properties.campaign_id": "42",
            "cb": "123",
        },
        headers={"Referer": "https://www.example.com/mail-landing"},
    )
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "image/gif"
    assert ok.content.startswith(b"GIF89a")
    bad = client.get(
        "/v1/p.gif",
        params={"writeKey": "dev-write-key", "anonymous_id": "anon-pixel-bad", "type": "warp"},
    )
    assert bad.status_code == 200 and bad.content == ok.content

    [record] = running.raw(1, anonymous_id="anon-pixel")
    assert record["type"] == "pageview"
    assert record["url"] == "https://www.example.com/mail-landing"
    assert (record["utm_source"], record["utm_medium"]) == ("newsletter", "email")
    assert record["click_ids"] == {"msclkid": "m-1"}
    assert record["properties"] == {"campaign_id": "42"}
    [rejected] = running.invalid(1, anonymous_id="anon-pixel-bad")
    assert rejected["endpoint"] == "/v1/p.gif"
    assert rejected["field"] == "type"
    assert b"type=warp" in rejected["raw"]


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status
    assert error["problem"]
    return error


def test_400_malformed_json(client: httpx.Client) -> None:
    error = _error(
        client.post(
            "/v1/events",
            content=b'{"type": "pageview",',
            headers={**KEY, "Content-Type": "application/json"},
        ),
        400,
    )
    assert error["reason"] == "malformed_json"


def test_400_names_the_bad_field(client: httpx.Client) -> None:
    error = _error(
        client.post("/v1/events", json={"type": "pageview", "anonymous_id": 7}, headers=KEY), 400
    )
    assert (error["reason"], error["field"]) == ("invalid_field", "anonymous_id")
    error = _error(
        client.post(
            "/v1/events",
            json={"type": "pageview", "anonymous_id": "a", "timestamp": "yesterday"},
            headers=KEY,
        ),
        400,
    )
    assert error["field"] == "timestamp"
    error = _error(client.post("/v1/events", json={"type": "pageview"}, headers=KEY), 400)
    assert (error["field"], error["problem"]) == ("anonymous_id", "required field is missing")


def test_400_batch_with_no_valid_event_lists_every_member(client: httpx.Client) -> None:
    response = client.post(
        "/v1/events",
        json={"batch": [{"type": "x", "anonymous_id": "a"}, {"anonymous_id": "a"}]},
        headers=KEY,
    )
    error = _error(response, 400)
    assert error["rejected"] == [
        {"index": 0, "field": "type", "problem": "Invalid enum value 'x'"},
        {"index": 1, "field": "type", "problem": "required field is missing"},
    ]


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({}, "X-Write-Key"),
        ({"X-Write-Key": "nope"}, "X-Write-Key"),
        ({"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()}, "Authorization"),
    ],
)
def test_401_missing_or_unknown_key(
    client: httpx.Client, headers: dict[str, str], field: str
) -> None:
    error = _error(
        client.post("/v1/events", json={"type": "pageview", "anonymous_id": "a"}, headers=headers),
        401,
    )
    assert (error["reason"], error["field"]) == ("unauthorized", field)


def test_401_unknown_key_in_body(client: httpx.Client) -> None:
    error = _error(
        client.post(
            "/v1/events", json={"type": "pageview", "anonymous_id": "a", "writeKey": "bad"}
        ),
        401,
    )
    assert error["field"] == "writeKey"


def test_403_origin_not_allowed_for_the_key(client: httpx.Client) -> None:
    event = {"type": "pageview", "anonymous_id": "a"}
    for origin in ("https://shop.example.com", "https://www.example.org"):
        ok = client.post(
            "/v1/events", json=event, headers={"X-Write-Key": "shop-key", "Origin": origin}
        )
        assert ok.status_code == 200, ok.text
    error = _error(
        client.post(
            "/v1/events",
            json=event,
            headers={"X-Write-Key": "shop-key", "Origin": "https://evil.test"},
        ),
        403,
    )
    assert error["field"] == "Origin"


def test_413_declared_streamed_event_and_batch_limits(client: httpx.Client) -> None:
    big = b"x" * (500 * 1024 + 1)
    error = _error(
        client.post("/v1/events", content=big, headers={**KEY, "Content-Type": "application/json"}),
        413,
    )
    assert error["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(64):
            yield b" " * 16384

    error = _error(
        client.post(
            "/v1/events", content=chunks(), headers={**KEY, "Content-Type": "application/json"}
        ),
        413,
    )
    assert error["reason"] == "too_large"
    one = {
        "type": "pageview",
        "anonymous_id": "a",
        "title": "t" * 2000,
        "url": "https://e.com/" + "u" * 8000,
        "properties": {"p": "v" * 30000},
    }
    error = _error(client.post("/v1/events", json=one, headers=KEY), 413)
    assert "32768" in error["problem"]
    many = {"batch": [{"type": "pageview", "anonymous_id": "a"}] * 501}
    error = _error(client.post("/v1/events", json=many, headers=KEY), 413)
    assert error["field"] == "batch"


def test_415_wrong_content_type(client: httpx.Client) -> None:
    error = _error(
        client.post(
            "/v1/events",
            content=b"type=pageview",
            headers={**KEY, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
    )
    assert error["field"] == "Content-Type"


def test_429_over_the_rate_limit_with_retry_after(client: httpx.Client) -> None:
    headers = {"X-Write-Key": "slow-key"}
    statuses = [
        client.post(
            "/v1/events", json={"type": "pageview", "anonymous_id": "slow"}, headers=headers
        )
        for _ in range(6)
    ]
    limited = [r for r in statuses if r.status_code == 429]
    assert statuses[0].status_code == 200
    assert limited, [r.status_code for r in statuses]
    error = _error(limited[0], 429)
    assert error["reason"] == "rate_limited"
    assert int(limited[0].headers["retry-after"]) >= 1


def test_405_and_cors_preflight(client: httpx.Client) -> None:
    error = _error(client.get("/v1/events"), 405)
    assert error["reason"] == "method_not_allowed"
    preflight = client.options(
        "/v1/events",
        headers={"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example.com"
    assert "X-Write-Key" in preflight.headers["access-control-allow-headers"]


def test_tracker_script_is_cacheable(client: httpx.Client) -> None:
    script = client.get("/v1/tracker.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert "max-age=" in script.headers["cache-control"]
    assert len(script.content) < 16 * 1024
    again = client.get("/v1/tracker.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304


def test_metrics_count_accepted_and_rejected(client: httpx.Client) -> None:
    client.post("/v1/events", json={"type": "pageview", "anonymous_id": "m"}, headers=KEY)
    client.post("/v1/events", json={"type": "nope", "anonymous_id": "m"}, headers=KEY)
    text = client.get("/metrics").text
    assert 'collector_events_accepted_total{site_id="dev"}' in text
    assert 'collector_events_rejected_total{reason="invalid_field"}' in text
    assert "collector_publish_latency_seconds_bucket" in text
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True


def test_spool_dir_is_empty_while_the_broker_acknowledges(running: RunningCollector) -> None:
    files = [p for p in Path(running.spool_dir).rglob("*.seg") if p.stat().st_size]
    assert files == []
