"""The demo player: CRM-shaped signed webhooks crm_ingest accepts, batching, retries, refusals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from services.crm_ingest.crms.base import InboundRequest
from services.crm_ingest.crms.generic import GenericAdapter
from services.crm_ingest.crms.hubspot import HubSpotAdapter
from services.crm_ingest.crms.salesforce import SalesforceAdapter
from services.demo.__main__ import main
from services.demo.player import Endpoints, Player, beacon_batches, webhook_request
from services.demo.simulator import Beacon, SimulationConfig, StageChange, simulate

END = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ENDPOINTS = Endpoints(collector_url="http://collector.test", crm_ingest_url="http://crm.test")


def _change(crm: str, stage: str = "negotiation", amount: str | None = "12500.00") -> StageChange:
    return StageChange(
        at=datetime(2026, 10, 3, 14, 5, 9, tzinfo=UTC),
        event_id=f"demo-1-X-{stage}",
        crm=crm,
        deal_id="X-1-17",
        deal_name="Globex - Acme Analytics",
        email="Jane.Doe@GMail.com",
        pipeline="default",
        stage=stage,
        amount=None if amount is None else Decimal(amount),
        currency="EUR",
    )


def _inbound(url: str, body: bytes, headers: dict[str, str], at: float) -> InboundRequest:
    return InboundRequest(
        method="POST",
        url=url,
        headers={k.lower(): v for k, v in headers.items()},
        query={},
        media_type="application/json",
        body=body,
        received_at=datetime.fromtimestamp(at, UTC),
    )


def test_generic_webhooks_pass_crm_ingests_signature_check_and_parser() -> None:
    now = time.time()
    url, body, headers = webhook_request(_change("generic"), ENDPOINTS, now)
    assert url == "http://crm.test/v1/webhooks/generic"
    adapter = GenericAdapter("dev-generic-secret", timedelta(seconds=300))
    request = _inbound(url, body, headers, now + 2)
    adapter.authenticate(request)
    (change,) = adapter.parse(request).changes
    assert change.deal_id == "X-1-17"
    assert change.crm_stage == "negotiation"
    assert change.amount == Decimal("12500.00") and change.currency == "EUR"
    assert change.occurred_at == datetime(2026, 10, 3, 14, 5, 9, tzinfo=UTC)
    assert change.email == "Jane.Doe@GMail.com"
    tampered = _inbound(url, body.replace(b"12500", b"99999"), headers, now + 2)
    with pytest.raises(Exception, match="signature"):
        adapter.authenticate(tampered)


def test_hubspot_webhooks_pass_crm_ingests_v3_signature_check_and_parser() -> None:
    now = time.time()
    url, body, headers = webhook_request(_change("hubspot", "closed_won"), ENDPOINTS, now)
    assert url == "http://crm.test/v1/webhooks/hubspot"
    adapter = HubSpotAdapter("dev-hubspot-secret", frozenset({"v3"}), timedelta(seconds=300))
    request = _inbound(url, body, headers, now + 1)
    adapter.authenticate(request)
    (change,) = adapter.parse(request).changes
    assert change.crm_stage == "closedwon"
    assert change.deal_id == "X-1-17"
    assert change.amount == Decimal("12500.00") and change.currency == "EUR"
    assert change.occurred_at == datetime(2026, 10, 3, 14, 5, 9, tzinfo=UTC)
    assert change.email == "Jane.Doe@GMail.com"


@pytest.mark.parametrize(
    ("stage", "crm_stage", "won", "lost"),
    [("sql", "Qualification", False, False), ("closed_lost", "Closed Lost", False, True)],
)
def test_salesforce_flow_callouts_pass_crm_ingests_check_and_parser(
    stage: str, crm_stage: str, won: bool, lost: bool
) -> None:
    now = time.time()
    url, body, headers = webhook_request(_change("salesforce", stage), ENDPOINTS, now)
    assert url == "http://crm.test/v1/webhooks/salesforce"
    adapter = SalesforceAdapter(
        ["00D000000000062"],
        None,
        "dev-salesforce-secret",
        "Contact_Email__c",
        "RecordTypeId",
        timedelta(seconds=300),
    )
    request = _inbound(url, body, headers, now + 1)
    adapter.authenticate(request)
    (change,) = adapter.parse(request).changes
    assert change.crm_stage == crm_stage
    assert (change.is_won, change.is_lost) == (won, lost)
    assert change.email == "Jane.Doe@GMail.com"
    assert change.amount == Decimal("12500.00")
    assert change.occurred_at == datetime(2026, 10, 3, 14, 5, 9, tzinfo=UTC)


def test_a_stage_without_amount_sends_no_amount_or_currency() -> None:
    _url, body, _headers = webhook_request(_change("generic", "mql", None), ENDPOINTS, time.time())
    payload = json.loads(body)
    assert "amount" not in payload and "currency" not in payload


def test_beacons_are_batched_per_user_agent_within_the_batch_size() -> None:
    beacons = [
        Beacon(END, agent, {"event_id": str(i)})
        for i, agent in enumerate(["chrome", "bot", "chrome", "chrome", "bot"])
    ]
    batches = beacon_batches(beacons, 2)
    assert sorted(len(b) for b in batches) == [1, 2, 2]
    assert all(len({b.user_agent for b in batch}) == 1 for batch in batches)
    assert sorted(b.event["event_id"] for batch in batches for b in batch) == list("01234")


def test_the_player_sends_everything_retries_busy_answers_and_reports_refusals() -> None:
    simulation = simulate(SimulationConfig(end=END, seed=5, visitors=60))
    received: list[dict[str, object]] = []
    webhooks: list[bytes] = []
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] % 7 == 3:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {}})
        if request.url.path == "/v1/events":
            assert request.headers["X-Write-Key"] == "dev-write-key"
            batch = json.loads(request.content)["batch"]
            received.extend(batch)
            return httpx.Response(200, json={"accepted": len(batch), "rejected": []})
        webhooks.append(request.content)
        return httpx.Response(200, json={"accepted": 1})

    client = httpx.Client(transport=httpx.MockTransport(handler))
    player = Player(ENDPOINTS, concurrency=2, batch_size=50, client=client)
    stats = player.play(simulation)
    assert stats.ok, stats.problems
    assert stats.retries > 0
    assert sorted(e["event_id"] for e in received) == sorted(
        str(b.event["event_id"]) for b in simulation.beacons
    )
    assert len(webhooks) == len(simulation.stage_changes) == stats.webhooks

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            return httpx.Response(
                200,
                json={"accepted": 0, "rejected": [{"index": 0, "field": "type", "problem": "x"}]},
            )
        return httpx.Response(401, json={"error": {"problem": "bad signature"}})

    refused = Player(
        ENDPOINTS, client=httpx.Client(transport=httpx.MockTransport(refuse)), attempts=2
    ).play(simulation)
    assert not refused.ok
    assert any("rejected" in p for p in refused.problems)
    assert any("401" in p for p in refused.problems)


def test_the_cli_writes_the_ground_truth_in_a_dry_run(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    truth = tmp_path / "truth.json"  # type: ignore[operator]
    code = main(
        ["--visitors", "50", "--seed", "9", "--dry-run", "--expected", "--truth", str(truth)]
    )
    assert code == 0
    data = json.loads(truth.read_text())
    assert data["seed"] == 9 and data["visitors"] == 50
    out = capsys.readouterr().out
    assert "simulated 50 visitors" in out and "Expected closed-loop report" in out


def test_the_cli_fails_clearly_when_the_stack_is_not_there(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--visitors", "5", "--no-progress", "--attempts", "2", "--truth", str(tmp_path / "t.json"),  # type: ignore[operator]
            "--collector-url", "http://127.0.0.1:9", "--crm-ingest-url", "http://127.0.0.1:9",
        ]
    )  # fmt: skip
    assert code == 1
    assert "failed" in capsys.readouterr().err
