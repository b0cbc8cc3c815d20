"""The crm_ingest app with an in-memory publisher: statuses, dedupe, replay, 503 semantics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.avro import AvroCodec
from services.common.errors import UnavailableError
from services.common.kafka import Key
from services.crm_ingest.app import create_app
from services.crm_ingest.deals import DealDetails
from services.crm_ingest.dedupe import DedupeStore
from services.crm_ingest.settings import CrmIngestSettings
from services.crm_ingest.signatures import closedloop_signature, hubspot_signature_v3

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "crm"
GENERIC = (SAMPLES / "generic.json").read_bytes()
DEALS = AvroCodec.for_topic("crm.deal_stages")
INVALID = AvroCodec.for_topic("crm.invalid")


class FakePublisher:
    """Acknowledges everything unless told to fail; keeps what it acknowledged."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, Key, bytes]] = []
        self.fail = False
        self.delay = 0.0

    async def publish_many(
        self, messages: Sequence[tuple[str, Key, bytes]]
    ) -> list[Exception | None]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            return [UnavailableError("broker down") for _ in messages]
        self.messages.extend(messages)
        return [None] * len(messages)

    def close(self, timeout: float = 10.0) -> int:
        return 0

    def on(self, topic: str) -> list[dict[str, Any]]:
        codec = DEALS if topic.endswith("deal_stages") else INVALID
        return [codec.decode(value) for name, _key, value in self.messages if name.endswith(topic)]


@pytest.fixture
def settings(tmp_path: Path) -> CrmIngestSettings:
    return CrmIngestSettings(dedupe_path=tmp_path / "dedupe.sqlite3", max_body_bytes=4096)


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def client(settings: CrmIngestSettings, publisher: FakePublisher) -> TestClient:
    return TestClient(create_app(settings, publisher, lookups={}))


def signed(
    body: bytes, secret: str = "dev-generic-secret", at: int | None = None
) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {
        "Content-Type": "application/json",
        "X-Closedloop-Signature": closedloop_signature(secret, stamp, body),
    }


def test_generic_accepted_after_the_ack(client: TestClient, publisher: FakePublisher) -> None:
    response = client.post("/v1/webhooks/generic", content=GENERIC, headers=signed(GENERIC))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "ignored": 0,
        "rejected": [],
        "event_ids": ["generic:crm-42-evt-7"],
    }
    (record,) = publisher.on("crm.deal_stages")
    assert record["stage"] == "negotiation"
    assert publisher.messages[0][1] == record["lead_id"]


def test_five_deliveries_one_event(client: TestClient, publisher: FakePublisher) -> None:
    for attempt in range(5):
        response = client.post(
            "/v1/webhooks/generic",
            content=GENERIC,
            headers=signed(GENERIC, at=int(time.time()) - attempt),
        )
        assert response.status_code == 200
        assert response.json()["duplicates"] == (0 if attempt == 0 else 1)
    assert len(publisher.on("crm.deal_stages")) == 1


def test_concurrent_duplicates_publish_once(
    settings: CrmIngestSettings, publisher: FakePublisher
) -> None:
    publisher.delay = 0.05
    app = create_app(settings, publisher, lookups={})

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            now = int(time.time())
            responses = await asyncio.gather(
                *[
                    http.post(
                        "/v1/webhooks/generic", content=GENERIC, headers=signed(GENERIC, at=now - i)
                    )
                    for i in range(5)
                ]
            )
        return [r.status_code for r in responses]

    assert asyncio.run(run()) == [200] * 5
    assert len(publisher.on("crm.deal_stages")) == 1


def test_dedupe_window_survives_a_restart(settings: CrmIngestSettings) -> None:
    first, second = FakePublisher(), FakePublisher()
    with TestClient(create_app(settings, first, lookups={})) as client:
        client.post("/v1/webhooks/generic", content=GENERIC, headers=signed(GENERIC))
    with TestClient(create_app(settings, second, lookups={})) as client:
        again = signed(GENERIC, at=int(time.time()) - 1)  # a CRM retry is signed anew
        response = client.post("/v1/webhooks/generic", content=GENERIC, headers=again)
    assert response.json()["duplicates"] == 1
    assert len(first.messages) == 1 and second.messages == []


def test_replayed_signature_is_401(client: TestClient, publisher: FakePublisher) -> None:
    headers = signed(GENERIC)
    assert client.post("/v1/webhooks/generic", content=GENERIC, headers=headers).status_code == 200
    replay = client.post("/v1/webhooks/generic", content=GENERIC, headers=headers)
    assert replay.status_code == 401
    assert "replay" in replay.json()["error"]["problem"]
    assert len(publisher.messages) == 1


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"Content-Type": "application/json"}, "missing"),
        (None, "does not match"),
        ("stale", "tolerance"),
    ],
)
def test_unauthenticated_is_401_and_publishes_nothing(
    client: TestClient, publisher: FakePublisher, headers: Any, problem: str
) -> None:
    if headers is None:
        headers = signed(GENERIC, secret="wrong")
    elif headers == "stale":
        headers = signed(GENERIC, at=int(time.time()) - 301)
    response = client.post("/v1/webhooks/generic", content=GENERIC, headers=headers)
    assert response.status_code == 401
    assert problem in response.json()["error"]["problem"]
    assert "dev-generic-secret" not in response.text
    assert publisher.messages == []


def test_unusable_body_is_400_naming_the_field_and_copied_raw(
    client: TestClient, publisher: FakePublisher
) -> None:
    body = json.dumps({**json.loads(GENERIC), "currency": "euro"}).encode()
    response = client.post("/v1/webhooks/generic", content=body, headers=signed(body))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["field"], error["reason"]) == ("currency", "invalid_field")
    assert "cfo@initech" not in response.text  # the body is not echoed
    (rejected,) = publisher.on("crm.invalid")
    assert rejected["raw"] == body and rejected["field"] == "currency"
    assert rejected["delivery_id"] == "crm-42-evt-7" and rejected["crm"] == "generic"


def test_wrong_content_type_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/webhooks/generic",
        content=GENERIC,
        headers={**signed(GENERIC), "Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert response.json()["error"]["field"] == "Content-Type"
    gzip = {**signed(GENERIC), "Content-Encoding": "gzip"}
    assert client.post("/v1/webhooks/generic", content=GENERIC, headers=gzip).status_code == 415


def test_oversized_body_is_413_even_when_streamed_without_length(client: TestClient) -> None:
    big = b'{"event_id": "' + b"x" * 5000 + b'"}'
    assert client.post("/v1/webhooks/generic", content=big, headers=signed(big)).status_code == 413

    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    response = client.post("/v1/webhooks/generic", content=chunks(), headers=signed(b""))
    assert response.status_code == 413


def test_broker_down_is_503_with_retry_after_and_the_retry_works(
    client: TestClient, publisher: FakePublisher
) -> None:
    publisher.fail = True
    headers = signed(GENERIC)
    response = client.post("/v1/webhooks/generic", content=GENERIC, headers=headers)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    publisher.fail = False
    # Not delivered, so not deduped, and the same signed request may be retried.
    retry = client.post("/v1/webhooks/generic", content=GENERIC, headers=headers)
    assert retry.status_code == 200 and retry.json()["accepted"] == 1


def test_salesforce_outbound_message_gets_the_soap_ack(
    client: TestClient, publisher: FakePublisher
) -> None:
    body = (SAMPLES / "salesforce_outbound_message.xml").read_bytes()
    response = client.post(
        "/v1/webhooks/salesforce", content=body, headers={"Content-Type": "text/xml; charset=utf-8"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert b"<Ack>true</Ack>" in response.content
    assert publisher.on("crm.deal_stages")[0]["deal_id"] == "0065g00000AbCdEAAZ"


def test_salesforce_invalid_copy_has_no_session_id(
    client: TestClient, publisher: FakePublisher
) -> None:
    body = (
        (SAMPLES / "salesforce_outbound_message.xml")
        .read_bytes()
        .replace(b"<sf:StageName>Proposal/Price Quote", b"<sf:StageName>Limbo")
    )
    response = client.post(
        "/v1/webhooks/salesforce", content=body, headers={"Content-Type": "text/xml"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["reason"] == "unknown_stage"
    (rejected,) = publisher.on("crm.invalid")
    assert b"DemoSessionId" not in rejected["raw"] and b"Limbo" in rejected["raw"]


def test_pipedrive_basic_auth(client: TestClient) -> None:
    body = (SAMPLES / "pipedrive_change_deal.json").read_bytes()
    response = client.post(
        "/v1/webhooks/pipedrive", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    # Authenticated, but no e-mail and no API token: 400 naming the e-mail.
    response = client.post(
        "/v1/webhooks/pipedrive",
        content=body,
        headers={"Content-Type": "application/json"},
        auth=("closedloop", "dev-pipedrive-password"),
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "email"
    assert "CRM_INGEST_PIPEDRIVE_API_TOKEN" in response.json()["error"]["problem"]


def test_hubspot_batch_of_only_other_objects_is_200_ignored(
    client: TestClient, settings: CrmIngestSettings
) -> None:
    from services.crm_ingest.signatures import hubspot_signature_v3

    events = json.loads((SAMPLES / "hubspot_subscription.json").read_text())
    body = json.dumps([events[1]]).encode()
    stamp = str(int(time.time() * 1000))
    url = "http://testserver/v1/webhooks/hubspot"
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_signature_v3(
            "dev-hubspot-secret", "POST", url, body, stamp
        ),
    }
    response = client.post("/v1/webhooks/hubspot", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["ignored"] == 1


def test_dedupe_store_window_and_signatures(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    store = DedupeStore(tmp_path / "d.sqlite3", timedelta(hours=1))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    store.record_delivered(["a", "b"], now)
    assert store.delivered(["a", "c"], now) == {"a"}
    assert store.delivered(["a"], now + timedelta(hours=2)) == set()
    assert store.claim_signature("s", now + timedelta(minutes=5), now)
    assert not store.claim_signature("s", now + timedelta(minutes=5), now)
    assert store.claim_signature("s", now + timedelta(minutes=20), now + timedelta(minutes=10))
    store.release_signature("s")
    assert store.claim_signature("s", now + timedelta(minutes=20), now + timedelta(minutes=10))


class FakeHubSpotLookup:
    """Answers every deal with the same contact and stage; counts calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def details(self, lookup_id: str) -> DealDetails:
        self.calls.append(lookup_id)
        return DealDetails(email="jane.buyer@example.com", crm_stage="qualifiedtobuy")

    async def aclose(self) -> None:
        return None


class PartlyFailingPublisher(FakePublisher):
    """Acknowledges every message except the deal event with ``failing_event``."""

    def __init__(self, failing_event: str) -> None:
        super().__init__()
        self.failing_event = failing_event

    async def publish_many(
        self, messages: Sequence[tuple[str, Key, bytes]]
    ) -> list[Exception | None]:
        results: list[Exception | None] = []
        for message in messages:
            if DEALS.decode(message[2])["event_id"] == self.failing_event:
                results.append(UnavailableError("not acknowledged"))
            else:
                self.messages.append(message)
                results.append(None)
        return results


def _hubspot_headers(
    body: bytes, public: str = "http://testserver", offset_ms: int = 0
) -> dict[str, str]:
    stamp = str(int(time.time() * 1000) - offset_ms)
    url = f"{public}/v1/webhooks/hubspot"
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_signature_v3(
            "dev-hubspot-secret", "POST", url, body, stamp
        ),
    }


def test_a_partly_acknowledged_batch_is_503_and_the_retry_publishes_only_the_rest(
    settings: CrmIngestSettings,
) -> None:
    events = json.loads((SAMPLES / "hubspot_subscription.json").read_text())
    batch = [{**events[0], "eventId": n, "objectId": 100 + n} for n in (1, 2)]
    body = json.dumps(batch).encode()
    publisher = PartlyFailingPublisher("hubspot:62515:2")
    lookup = FakeHubSpotLookup()
    client = TestClient(create_app(settings, publisher, lookups={"hubspot": lookup}))
    response = client.post("/v1/webhooks/hubspot", content=body, headers=_hubspot_headers(body))
    assert response.status_code == 503
    assert [r["event_id"] for r in publisher.on("crm.deal_stages")] == ["hubspot:62515:1"]
    publisher.failing_event = ""
    # A CRM retry carries a new timestamp, hence a new signature.
    retry_headers = _hubspot_headers(body, offset_ms=1000)
    retry = client.post("/v1/webhooks/hubspot", content=body, headers=retry_headers)
    assert retry.status_code == 200
    assert (retry.json()["accepted"], retry.json()["duplicates"]) == (1, 1)
    assert [r["event_id"] for r in publisher.on("crm.deal_stages")] == [
        "hubspot:62515:1",
        "hubspot:62515:2",
    ]
    assert lookup.calls == ["101", "102", "101", "102"]
    assert publisher.on("crm.deal_stages")[0]["stage"] == "proposal"  # the webhook's stage


def test_hubspot_signature_over_the_public_url_behind_a_proxy(tmp_path: Path) -> None:
    settings = CrmIngestSettings(
        dedupe_path=tmp_path / "d.sqlite3", public_url="https://crm.example.com/"
    )
    client = TestClient(create_app(settings, FakePublisher(), lookups={}))
    body = b"[]"
    signed_public = _hubspot_headers(body, "https://crm.example.com")
    signed_local = _hubspot_headers(body)
    assert (
        client.post("/v1/webhooks/hubspot", content=body, headers=signed_local).status_code == 401
    )
    # Authenticated (so the empty batch is a 400, not a 401).
    assert (
        client.post("/v1/webhooks/hubspot", content=body, headers=signed_public).status_code == 400
    )
