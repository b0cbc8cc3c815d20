"""crm_ingest over real HTTP on the real broker: documented samples, every error status, dedupe, 503."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi import FastAPI
from pydantic import SecretStr

from services.broker.local import free_port
from services.common.avro import AvroCodec
from services.common.kafka import consumer_config
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings, KafkaSettings
from services.crm_ingest.app import create_app
from services.crm_ingest.settings import CrmIngestSettings
from services.crm_ingest.signatures import closedloop_signature, hubspot_signature_v3

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "crm"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HUBSPOT_TOKEN = "pat-test-token"
PIPEDRIVE_TOKEN = "pd-test-token"


class FakeCrmApi:
    """HubSpot and Pipedrive API answers in their documented shapes, on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.fail_with: int | None = None
        routes = {
            "/crm/v3/objects/deals/1246965": (
                "Bearer " + HUBSPOT_TOKEN,
                "hubspot_deal_response.json",
            ),
            "/crm/v3/objects/contacts/1246978": (
                "Bearer " + HUBSPOT_TOKEN,
                "hubspot_contact_response.json",
            ),
            "/api/v1/persons/3": (PIPEDRIVE_TOKEN, "pipedrive_person_response.json"),
        }
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                api.requests.append(path)
                route = routes.get(path)
                credential = self.headers.get("Authorization") or self.headers.get("x-api-token")
                if api.fail_with is not None:
                    self._answer(api.fail_with, {"status": "error"})
                elif route is None:
                    self._answer(404, {"status": "error", "message": "resource not found"})
                elif credential != route[0]:
                    self._answer(401, {"status": "error", "category": "INVALID_AUTHENTICATION"})
                else:
                    self._answer(200, json.loads((SAMPLES / route[1]).read_text()))

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCrmApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class AppServer:
    """The app under uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn exited"
            assert time.monotonic() < deadline, "uvicorn did not start in 60 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def read_topic(
    kafka: KafkaSettings, topic: str, expected: int, timeout: float = 45.0, settle: float = 2.0
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """Every message of a topic from the beginning: waits for ``expected``, then ``settle`` s more."""
    codec = AvroCodec.for_topic(topic)
    consumer = Consumer(consumer_config(kafka, f"g-{uuid.uuid4().hex[:8]}", "crm-test"))
    name = kafka.topic(topic)
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in range(kafka.partitions)])
    found: list[tuple[bytes | None, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if len(found) >= expected and settle_until is None:
                settle_until = now + settle
            if (settle_until is not None and now > settle_until) or now > deadline:
                return found
            for message in consumer.consume(100, timeout=0.3):
                if message.error() is None:
                    found.append((message.key(), codec.decode(message.value())))
    finally:
        consumer.close()


def settings_for(kafka: KafkaSettings, tmp_path: Path, **overrides: Any) -> CrmIngestSettings:
    values: dict[str, Any] = {
        "kafka": kafka,
        "dedupe_path": tmp_path / "dedupe.sqlite3",
        "max_body_bytes": 65536,
    }
    values.update(overrides)
    return CrmIngestSettings(**values)


@pytest.fixture
def crm_api() -> Iterator[FakeCrmApi]:
    with FakeCrmApi() as api:
        yield api


@pytest.fixture
def server(
    kafka_settings: KafkaSettings, tmp_path: Path, crm_api: FakeCrmApi
) -> Iterator[AppServer]:
    settings = settings_for(
        kafka_settings,
        tmp_path,
        hubspot_access_token=SecretStr(HUBSPOT_TOKEN),
        hubspot_api_url=crm_api.url,
        pipedrive_api_token=SecretStr(PIPEDRIVE_TOKEN),
        pipedrive_api_url=crm_api.url,
    )
    with AppServer(create_app(settings)) as running:
        yield running


def generic_headers(
    body: bytes, at: int | None = None, secret: str = "dev-generic-secret"
) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {
        "Content-Type": "application/json",
        "X-Closedloop-Signature": closedloop_signature(secret, stamp, body),
    }


def hubspot_headers(url: str, body: bytes, offset_ms: int = 0) -> dict[str, str]:
    stamp = str(int(time.time() * 1000) - offset_ms)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": stamp,
        "X-HubSpot-Signature-v3": hubspot_signature_v3(
            "dev-hubspot-secret", "POST", url, body, stamp
        ),
    }


def expected(**fields: Any) -> dict[str, Any]:
    """A DealStageChanged as decoded; received_at is checked separately."""
    return {
        "pipeline": "default",
        "is_won": False,
        "is_lost": False,
        "occurred_at": T0,
        **fields,
    }


def assert_record(
    key: bytes | None, record: dict[str, Any], want: dict[str, Any], email: str
) -> None:
    lead_id = lead_id_for_email(email, IdentitySettings())
    assert key == lead_id.encode()
    received_at = record.pop("received_at")
    assert abs((datetime.now(UTC) - received_at).total_seconds()) < 120
    assert record == {**want, "lead_id": lead_id}


def post(url: str, body: bytes, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=30, **kwargs)


def test_each_crm_sample_becomes_the_expected_event(
    server: AppServer, kafka_settings: KafkaSettings, crm_api: FakeCrmApi
) -> None:
    generic = (SAMPLES / "generic.json").read_bytes()
    assert (
        post(f"{server.url}/v1/webhooks/generic", generic, generic_headers(generic)).status_code
        == 200
    )

    hubspot_url = f"{server.url}/v1/webhooks/hubspot"
    batch = (SAMPLES / "hubspot_subscription.json").read_bytes()
    response = post(hubspot_url, batch, hubspot_headers(hubspot_url, batch))
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["ignored"]) == (1, 1)

    workflow = (SAMPLES / "hubspot_workflow_deal.json").read_bytes()
    assert post(hubspot_url, workflow, hubspot_headers(hubspot_url, workflow)).status_code == 200

    soap = (SAMPLES / "salesforce_outbound_message.xml").read_bytes()
    response = post(
        f"{server.url}/v1/webhooks/salesforce", soap, {"Content-Type": "text/xml; charset=utf-8"}
    )
    assert response.status_code == 200
    assert b"<Ack>true</Ack>" in response.content

    pipedrive = (SAMPLES / "pipedrive_change_deal.json").read_bytes()
    response = post(
        f"{server.url}/v1/webhooks/pipedrive",
        pipedrive,
        {"Content-Type": "application/json"},
        auth=("closedloop", "dev-pipedrive-password"),
    )
    assert response.status_code == 200, response.text

    records = {r["event_id"]: (k, r) for k, r in read_topic(kafka_settings, "crm.deal_stages", 5)}
    assert len(records) == 5
    assert_record(
        *records["generic:crm-42-evt-7"],
        expected(
            event_id="generic:crm-42-evt-7",
            crm="generic",
            deal_id="42",
            pipeline="enterprise",
            stage="negotiation",
            stage_order=60,
            crm_stage="negotiation",
            amount=Decimal("12500.00"),
            currency="EUR",
            deal_name="Initech rollout",
        ),
        "cfo@initech.example",
    )
    assert_record(
        *records["hubspot:62515:3816279340"],
        expected(
            event_id="hubspot:62515:3816279340",
            crm="hubspot",
            deal_id="1246965",
            stage="proposal",
            stage_order=50,
            crm_stage="presentationscheduled",
            amount=Decimal("15000.50"),
            currency="USD",
            deal_name="Acme renewal",
        ),
        "jane.buyer@example.com",
    )
    assert_record(
        *records["hubspot:62515:workflow:1246965:closedwon:1772366400000"],
        expected(
            event_id="hubspot:62515:workflow:1246965:closedwon:1772366400000",
            crm="hubspot",
            deal_id="1246965",
            stage="closed_won",
            stage_order=70,
            crm_stage="closedwon",
            amount=Decimal("15000.00"),
            currency="EUR",
            is_won=True,
            deal_name="Acme renewal",
        ),
        "jane.buyer@example.com",
    )
    assert_record(
        *records["salesforce:00D000000000062:04l0800002nrC5BAAU"],
        expected(
            event_id="salesforce:00D000000000062:04l0800002nrC5BAAU",
            crm="salesforce",
            deal_id="0065g00000AbCdEAAZ",
            stage="proposal",
            stage_order=50,
            crm_stage="Proposal/Price Quote",
            amount=Decimal("48000.00"),
            currency="EUR",
            deal_name="Globex platform deal",
        ),
        "buyer@globex.example",
    )
    assert_record(
        *records["pipedrive:3b7f1d2a-7a8e-4e16-9b2c-52a1f6d0c4e9"],
        expected(
            event_id="pipedrive:3b7f1d2a-7a8e-4e16-9b2c-52a1f6d0c4e9",
            crm="pipedrive",
            deal_id="1",
            pipeline="1",
            stage="proposal",
            stage_order=50,
            crm_stage="4",
            amount=Decimal("2500.00"),
            currency="USD",
            deal_name="test deal",
        ),
        "john.doe@acme.example",
    )
    assert read_topic(kafka_settings, "crm.invalid", 0, settle=0.5) == []


def test_every_error_status_and_the_invalid_copy(
    server: AppServer, kafka_settings: KafkaSettings
) -> None:
    url = f"{server.url}/v1/webhooks/generic"
    body = (SAMPLES / "generic.json").read_bytes()

    bad_signature = post(url, body, generic_headers(body, secret="guess"))
    stale = post(url, body, generic_headers(body, at=int(time.time()) - 600))
    assert (bad_signature.status_code, stale.status_code) == (401, 401)
    assert "tolerance" in stale.json()["error"]["problem"]

    headers = generic_headers(body)
    assert post(url, body, headers).status_code == 200
    replay = post(url, body, headers)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]["problem"]

    malformed = b'{"event_id": "x", "deal_id": '
    response = post(url, malformed, generic_headers(malformed))
    assert response.status_code == 400
    assert response.json()["error"]["reason"] == "malformed_body"

    oversized = b'{"pad": "' + b"x" * 70_000 + b'"}'
    assert post(url, oversized, generic_headers(oversized)).status_code == 413

    wrong_type = post(
        url, body, {**generic_headers(body, at=int(time.time()) - 5), "Content-Type": "text/csv"}
    )
    assert wrong_type.status_code == 415

    unauthenticated_malformed = post(url, malformed, {"Content-Type": "application/json"})
    assert unauthenticated_malformed.status_code == 401

    invalid = read_topic(kafka_settings, "crm.invalid", 1)
    assert len(invalid) == 1, "only the authenticated malformed body is kept"
    key, rejected = invalid[0]
    assert key is None
    assert (rejected["crm"], rejected["reason"], rejected["raw"]) == (
        "generic",
        "malformed_body",
        malformed,
    )
    assert len(read_topic(kafka_settings, "crm.deal_stages", 1)) == 1


def test_a_delivery_repeated_five_times_is_one_event(
    server: AppServer, kafka_settings: KafkaSettings
) -> None:
    """Each CRM's sample delivered five times (retries are signed anew): one event each."""
    generic = (SAMPLES / "generic.json").read_bytes()
    hubspot = (SAMPLES / "hubspot_subscription.json").read_bytes()
    soap = (SAMPLES / "salesforce_outbound_message.xml").read_bytes()
    pipedrive = (SAMPLES / "pipedrive_change_deal.json").read_bytes()
    hubspot_url = f"{server.url}/v1/webhooks/hubspot"
    now = int(time.time())
    for attempt in range(5):
        answers = [
            post(
                f"{server.url}/v1/webhooks/generic",
                generic,
                generic_headers(generic, at=now - attempt),
            ),
            post(hubspot_url, hubspot, hubspot_headers(hubspot_url, hubspot, offset_ms=attempt)),
            post(f"{server.url}/v1/webhooks/salesforce", soap, {"Content-Type": "text/xml"}),
            post(
                f"{server.url}/v1/webhooks/pipedrive",
                pipedrive,
                {"Content-Type": "application/json"},
                auth=("closedloop", "dev-pipedrive-password"),
            ),
        ]
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    events = [
        r["event_id"] for _k, r in read_topic(kafka_settings, "crm.deal_stages", 4, settle=3.0)
    ]
    assert sorted(events) == [
        "generic:crm-42-evt-7",
        "hubspot:62515:3816279340",
        "pipedrive:3b7f1d2a-7a8e-4e16-9b2c-52a1f6d0c4e9",
        "salesforce:00D000000000062:04l0800002nrC5BAAU",
    ]


def test_broker_down_is_503_and_nothing_is_recorded(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    dead = kafka_settings.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "delivery_timeout_ms": 1000}
    )
    body = (SAMPLES / "generic.json").read_bytes()
    with AppServer(create_app(settings_for(dead, tmp_path))) as down:
        response = post(f"{down.url}/v1/webhooks/generic", body, generic_headers(body))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["reason"] == "unavailable"
    # Same dedupe file, broker back: the retry is published (the 503 recorded nothing), once.
    with AppServer(create_app(settings_for(kafka_settings, tmp_path))) as up:
        retry = post(
            f"{up.url}/v1/webhooks/generic", body, generic_headers(body, at=int(time.time()) - 1)
        )
    assert retry.status_code == 200 and retry.json()["accepted"] == 1
    assert len(read_topic(kafka_settings, "crm.deal_stages", 1)) == 1


def test_lookups_are_cached_and_crm_api_failures_map_to_statuses(
    server: AppServer, crm_api: FakeCrmApi, kafka_settings: KafkaSettings
) -> None:
    url = f"{server.url}/v1/webhooks/hubspot"
    events = json.loads((SAMPLES / "hubspot_subscription.json").read_text())

    def send(event: dict[str, Any]) -> httpx.Response:
        body = json.dumps([event]).encode()
        return post(url, body, hubspot_headers(url, body))

    assert send({**events[0], "eventId": 1}).status_code == 200
    assert (
        send(
            {**events[0], "eventId": 2, "propertyName": "amount", "propertyValue": "99"}
        ).status_code
        == 200
    )
    assert crm_api.requests.count("/crm/v3/objects/contacts/1246978") == 1, "e-mail not cached"
    assert crm_api.requests.count("/crm/v3/objects/deals/1246965") == 2

    unknown = send({**events[0], "eventId": 3, "objectId": 404404})
    assert unknown.status_code == 400 and unknown.json()["error"]["reason"] == "unknown_record"

    crm_api.fail_with = 502
    down = send({**events[0], "eventId": 4, "objectId": 555})
    assert down.status_code == 503 and "Retry-After" in down.headers
    crm_api.fail_with = None

    records = [r for _k, r in read_topic(kafka_settings, "crm.deal_stages", 2)]
    amount_change = next(r for r in records if r["event_id"] == "hubspot:62515:2")
    assert (amount_change["amount"], amount_change["stage"]) == (Decimal("99.00"), "proposal")


def test_wrong_lookup_token_is_503_not_a_lost_event(
    kafka_settings: KafkaSettings, tmp_path: Path, crm_api: FakeCrmApi
) -> None:
    settings = settings_for(
        kafka_settings,
        tmp_path,
        pipedrive_api_token=SecretStr("wrong"),
        pipedrive_api_url=crm_api.url,
    )
    body = (SAMPLES / "pipedrive_change_deal.json").read_bytes()
    with AppServer(create_app(settings)) as running:
        response = post(
            f"{running.url}/v1/webhooks/pipedrive",
            body,
            {"Content-Type": "application/json"},
            auth=("closedloop", "dev-pipedrive-password"),
        )
    assert response.status_code == 503
    assert "wrong" not in response.text


def test_runs_as_a_process_and_stops_gracefully(
    kafka_settings: KafkaSettings, tmp_path: Path, service_processes: Any
) -> None:
    from tests.fixtures.processes import http_ok

    port = free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "CRM_INGEST_PORT": str(port),
        "CRM_INGEST_DEDUPE_PATH": str(tmp_path / "dedupe.sqlite3"),
        "CRM_INGEST_GENERIC_SECRET": "process-secret",
    }
    process = service_processes("services.crm_ingest", env).start(
        http_ok(f"http://127.0.0.1:{port}/healthz")
    )
    body = (SAMPLES / "generic.json").read_bytes()
    response = post(
        f"http://127.0.0.1:{port}/v1/webhooks/generic",
        body,
        generic_headers(body, secret="process-secret"),
    )
    assert response.status_code == 200, process.tail()
    assert process.stop() == 0, process.tail()
    assert "process-secret" not in process.tail(1000)
    assert len(read_topic(kafka_settings, "crm.deal_stages", 1)) == 1
