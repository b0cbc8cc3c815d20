"""schemathesis against crm_ingest's OpenAPI over real HTTP: no 5xx, documented statuses and bodies."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from services.common.settings import KafkaSettings
from services.crm_ingest.app import create_app
from services.crm_ingest.settings import CrmIngestSettings
from services.crm_ingest.signatures import closedloop_signature, hubspot_signature_v3
from tests.integration.test_crm_ingest import AppServer

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def crm_openapi(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Any]:
    settings = CrmIngestSettings(kafka=kafka_settings, dedupe_path=tmp_path / "dedupe.sqlite3")
    with AppServer(create_app(settings)) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("crm_openapi")


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    """Every operation, with random bodies and headers: signed (for HMAC receivers) and not."""
    case.call_and_validate(checks=CHECKS)
    if not case.operation.path.startswith("/v1/webhooks/"):
        return
    # The same case with valid credentials, so parsing is exercised past authentication.
    kwargs = case.as_transport_kwargs()
    body = kwargs.pop("json", None)
    raw = json.dumps(body).encode() if body is not None else kwargs.pop("data", b"") or b""
    raw = raw.encode() if isinstance(raw, str) else raw
    headers = dict(kwargs.pop("headers", {}) or {})
    headers.setdefault("Content-Type", case.media_type or "application/json")
    crm = case.operation.path.rsplit("/", 1)[1]
    now = int(time.time())
    if crm in {"generic", "salesforce"}:
        secret = f"dev-{crm}-secret"
        headers["X-Closedloop-Signature"] = closedloop_signature(secret, now, raw)
    elif crm == "hubspot":
        stamp = str(now * 1000)
        headers["X-HubSpot-Request-Timestamp"] = stamp
        headers["X-HubSpot-Signature-v3"] = hubspot_signature_v3(
            "dev-hubspot-secret", kwargs["method"], kwargs["url"], raw, stamp
        )
    else:
        token = base64.b64encode(b"closedloop:dev-pipedrive-password").decode()
        headers["Authorization"] = f"Basic {token}"
    response = requests.request(data=raw, headers=headers, timeout=30, **kwargs)
    case.validate_response(response, checks=CHECKS)
