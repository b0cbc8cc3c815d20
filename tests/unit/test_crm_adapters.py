"""CRM payload parsing and normalization: documented samples to exact DealStageChanged records."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import AuthenticationError, ConfigurationError
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings
from services.crm_ingest.crms.base import DealChange, InboundRequest, timestamp
from services.crm_ingest.crms.generic import GenericAdapter
from services.crm_ingest.crms.hubspot import HubSpotAdapter
from services.crm_ingest.crms.pipedrive import PipedriveAdapter
from services.crm_ingest.crms.salesforce import SalesforceAdapter, redact_session_id
from services.crm_ingest.deals import DealDetails, complete, deal_stage_changed
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.stages import StageMap

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "crm"
NOW = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
IDENTITY = IdentitySettings()
STAGES = StageMap.build()
TOL = timedelta(seconds=300)


def request(body: bytes, media_type: str = "application/json", **query: str) -> InboundRequest:
    return InboundRequest("POST", "https://x/", {}, query, media_type, body, NOW)


def record(crm: str, change: DealChange) -> dict[str, Any]:
    return deal_stage_changed(crm, change, STAGES, IDENTITY, NOW, "USD")


def salesforce(**overrides: Any) -> SalesforceAdapter:
    args: dict[str, Any] = {
        "organization_ids": ["00D000000000062"],
        "outbound_token": None,
        "flow_secret": "flow",
        "email_field": "Contact_Email__c",
        "pipeline_field": "RecordTypeId",
        "tolerance": TOL,
    }
    args.update(overrides)
    return SalesforceAdapter(**args)


def test_generic_sample_becomes_the_documented_record() -> None:
    delivery = GenericAdapter("s", TOL).parse(request((SAMPLES / "generic.json").read_bytes()))
    assert record("generic", delivery.changes[0]) == {
        "event_id": "generic:crm-42-evt-7",
        "crm": "generic",
        "deal_id": "42",
        "lead_id": lead_id_for_email("cfo@initech.example", IDENTITY),
        "pipeline": "enterprise",
        "stage": "negotiation",
        "stage_order": 60,
        "crm_stage": "negotiation",
        "amount": Decimal("12500.00"),
        "currency": "EUR",
        "is_won": False,
        "is_lost": False,
        "occurred_at": T0,
        "received_at": NOW,
        "deal_name": "Initech rollout",
    }


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"color": "red"}, "color", "unknown_field"),
        ({"event_id": None}, "event_id", "missing_field"),
        ({"deal_id": ""}, "deal_id", "missing_field"),
        ({"email": None}, "email", "missing_field"),
        ({"stage": 3.5}, "stage", "invalid_field"),
        ({"amount": "12,5"}, "amount", "invalid_field"),
        ({"amount": "-1"}, "amount", "invalid_field"),
        ({"amount": "NaN"}, "amount", "invalid_field"),
        ({"amount": "1e30"}, "amount", "invalid_field"),
        ({"currency": None}, "currency", "missing_field"),
        ({"currency": "euro"}, "currency", "invalid_field"),
        ({"occurred_at": "yesterday"}, "occurred_at", "invalid_field"),
        ({"occurred_at": None}, "occurred_at", "missing_field"),
        ({"is_won": "yes"}, "is_won", "invalid_field"),
    ],
)
def test_generic_bad_fields_are_named(change: dict[str, Any], field: str, reason: str) -> None:
    body = json.loads((SAMPLES / "generic.json").read_text())
    body.update(change)
    with pytest.raises(PayloadError) as caught:
        GenericAdapter("s", TOL).parse(request(json.dumps(body).encode()))
    assert (caught.value.field, caught.value.reason) == (field, reason)


@pytest.mark.parametrize("body", [b"{", b"[]", b"\xff\xfe", b"[" * 100_000, b"null"])
def test_generic_malformed_bodies(body: bytes) -> None:
    with pytest.raises(PayloadError) as caught:
        GenericAdapter("s", TOL).parse(request(body))
    assert caught.value.reason == "malformed_body"


def test_generic_normalization_rules() -> None:
    body = json.loads((SAMPLES / "generic.json").read_text())
    body.update(
        stage="won", is_won=True, amount=99.999, occurred_at=1772366400000, email=" A.B@GMail.com "
    )
    del body["pipeline"]
    result = record(
        "generic", GenericAdapter("s", TOL).parse(request(json.dumps(body).encode())).changes[0]
    )
    assert result["stage"] == "closed_won" and result["is_won"] and not result["is_lost"]
    assert result["stage_order"] == 70 and result["crm_stage"] == "won"
    assert result["amount"] == Decimal("100.00") and result["pipeline"] == "default"
    assert result["occurred_at"] == T0
    assert result["lead_id"] == lead_id_for_email("ab@gmail.com", IDENTITY)


def test_unknown_stage_and_bad_email_are_payload_errors() -> None:
    body = json.loads((SAMPLES / "generic.json").read_text())
    change = (
        GenericAdapter("s", TOL)
        .parse(request(json.dumps({**body, "stage": "Dreaming"}).encode()))
        .changes[0]
    )
    with pytest.raises(PayloadError, match="unknown generic stage 'Dreaming'") as caught:
        record("generic", change)
    assert caught.value.reason == "unknown_stage"
    change = (
        GenericAdapter("s", TOL)
        .parse(request(json.dumps({**body, "email": "nobody"}).encode()))
        .changes[0]
    )
    with pytest.raises(PayloadError) as caught:
        record("generic", change)
    assert (caught.value.field, caught.value.reason) == ("email", "invalid_email")


def test_hubspot_subscription_sample_needs_a_lookup_then_becomes_the_record() -> None:
    adapter = HubSpotAdapter("secret", frozenset({"v3"}), TOL)
    delivery = adapter.parse(request((SAMPLES / "hubspot_subscription.json").read_bytes()))
    assert delivery.ignored == 1 and not delivery.rejections
    (change,) = delivery.changes
    assert change.email is None and change.lookup_id == "1246965"
    with pytest.raises(PayloadError) as caught:
        record("hubspot", change)
    assert caught.value.field == "email"
    deal = json.loads((SAMPLES / "hubspot_deal_response.json").read_text())["properties"]
    details = DealDetails(
        email="jane.buyer@example.com",
        crm_stage=deal["dealstage"],
        pipeline=deal["pipeline"],
        amount=Decimal(deal["amount"]),
        currency=deal["deal_currency_code"],
        deal_name=deal["dealname"],
    )
    assert record("hubspot", complete(change, details)) == {
        "event_id": "hubspot:62515:3816279340",
        "crm": "hubspot",
        "deal_id": "1246965",
        "lead_id": lead_id_for_email("jane.buyer@example.com", IDENTITY),
        "pipeline": "default",
        "stage": "proposal",
        "stage_order": 50,
        "crm_stage": "presentationscheduled",
        "amount": Decimal("15000.50"),
        "currency": "USD",
        "is_won": False,
        "is_lost": False,
        "occurred_at": T0,
        "received_at": NOW,
        "deal_name": "Acme renewal",
    }


def test_hubspot_webhook_stage_wins_over_the_looked_up_one() -> None:
    change = DealChange(0, "e", "1", T0, crm_stage="closedwon", lookup_id="1")
    merged = complete(change, DealDetails(email="a@b.example", crm_stage="appointmentscheduled"))
    assert merged.crm_stage == "closedwon" and merged.email == "a@b.example"


def test_hubspot_batch_keeps_good_events_and_rejects_bad_ones_by_index() -> None:
    events = json.loads((SAMPLES / "hubspot_subscription.json").read_text())
    bad = {**events[0], "eventId": 7, "occurredAt": "when?"}
    other_property = {**events[0], "eventId": 8, "propertyName": "description"}
    new_style = {
        **events[0],
        "eventId": 9,
        "subscriptionType": "object.propertyChange",
        "objectTypeId": "0-3",
    }
    body = json.dumps([events[0], bad, other_property, new_style, 5]).encode()
    delivery = HubSpotAdapter("s", frozenset({"v3"}), TOL).parse(request(body))
    assert [c.event_id for c in delivery.changes] == ["hubspot:62515:3816279340", "hubspot:62515:9"]
    assert delivery.ignored == 1
    assert [(r.index, r.field, r.reason) for r in delivery.rejections] == [
        (1, "[1].occurredAt", "invalid_field"),
        (4, "[4]", "malformed_body"),
    ]
    assert delivery.rejections[0].raw == json.dumps(bad, separators=(",", ":")).encode()


def test_hubspot_workflow_sample_becomes_the_record() -> None:
    adapter = HubSpotAdapter("s", frozenset({"v3"}), TOL)
    (change,) = adapter.parse(
        request((SAMPLES / "hubspot_workflow_deal.json").read_bytes())
    ).changes
    result = record("hubspot", change)
    assert result == {
        "event_id": "hubspot:62515:workflow:1246965:closedwon:1772366400000",
        "crm": "hubspot",
        "deal_id": "1246965",
        "lead_id": lead_id_for_email("jane.buyer@example.com", IDENTITY),
        "pipeline": "default",
        "stage": "closed_won",
        "stage_order": 70,
        "crm_stage": "closedwon",
        "amount": Decimal("15000.00"),
        "currency": "EUR",
        "is_won": True,
        "is_lost": False,
        "occurred_at": T0,
        "received_at": NOW,
        "deal_name": "Acme renewal",
    }


def test_hubspot_flat_workflow_body() -> None:
    body = {
        "hs_object_id": "77",
        "dealstage": "closedlost",
        "hs_lastmodifieddate": "2026-03-01T12:00:00Z",
        "email": "x@y.example",
    }
    (change,) = (
        HubSpotAdapter("s", frozenset({"v3"}), TOL)
        .parse(request(json.dumps(body).encode()))
        .changes
    )
    result = record("hubspot", change)
    assert (result["deal_id"], result["stage"], result["is_lost"], result["amount"]) == (
        "77",
        "closed_lost",
        True,
        None,
    )


def test_salesforce_outbound_sample_becomes_the_record() -> None:
    delivery = salesforce().parse(
        request((SAMPLES / "salesforce_outbound_message.xml").read_bytes(), "text/xml")
    )
    assert record("salesforce", delivery.changes[0]) == {
        "event_id": "salesforce:00D000000000062:04l0800002nrC5BAAU",
        "crm": "salesforce",
        "deal_id": "0065g00000AbCdEAAZ",
        "lead_id": lead_id_for_email("buyer@globex.example", IDENTITY),
        "pipeline": "default",
        "stage": "proposal",
        "stage_order": 50,
        "crm_stage": "Proposal/Price Quote",
        "amount": Decimal("48000.00"),
        "currency": "EUR",
        "is_won": False,
        "is_lost": False,
        "occurred_at": T0,
        "received_at": NOW,
        "deal_name": "Globex platform deal",
    }


def test_salesforce_checks_org_and_token() -> None:
    body = (SAMPLES / "salesforce_outbound_message.xml").read_bytes()
    salesforce().authenticate(request(body, "text/xml"))
    salesforce(organization_ids=["00D000000000062EAA"]).authenticate(request(body, "text/xml"))
    with pytest.raises(AuthenticationError, match="organization"):
        salesforce(organization_ids=["00D000000000099"]).authenticate(request(body, "text/xml"))
    with pytest.raises(AuthenticationError, match="token"):
        salesforce(outbound_token="tok").authenticate(request(body, "text/xml", token="bad"))
    salesforce(outbound_token="tok").authenticate(request(body, "text/xml", token="tok"))
    with pytest.raises(AuthenticationError, match="organization ID"):
        salesforce().authenticate(request(b"<not xml", "text/xml"))


def test_salesforce_refuses_xml_entities() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><x>&b;</x>'
    )
    with pytest.raises(PayloadError) as caught:
        salesforce(outbound_token="t").parse(request(bomb, "text/xml"))
    assert caught.value.reason == "malformed_body"


def test_salesforce_closed_flags_and_session_redaction() -> None:
    body = (SAMPLES / "salesforce_outbound_message.xml").read_bytes()
    won = body.replace(b"<sf:IsClosed>false", b"<sf:IsClosed>true").replace(
        b"<sf:IsWon>false", b"<sf:IsWon>true"
    )
    result = record("salesforce", salesforce().parse(request(won, "text/xml")).changes[0])
    assert (result["stage"], result["is_won"], result["crm_stage"]) == (
        "closed_won",
        True,
        "Proposal/Price Quote",
    )
    redacted = redact_session_id(body)
    assert b"DemoSessionId" not in redacted and b"<SessionId>(redacted)</SessionId>" in redacted


def test_salesforce_flow_json() -> None:
    body = {
        "OrganizationId": "00D000000000062EAA",
        "Opportunity": {
            "Id": "006A",
            "StageName": "Closed Lost",
            "IsClosed": True,
            "IsWon": False,
            "Amount": 10,
            "LastModifiedDate": "2026-03-01T12:00:00.000+0000",
            "Contact_Email__c": "a@b.example",
        },
    }
    (change,) = salesforce().parse(request(json.dumps(body).encode())).changes
    result = record("salesforce", change)
    assert result["event_id"] == "salesforce:00D000000000062:flow:006A:Closed Lost:1772366400000"
    assert (result["stage"], result["is_lost"], result["currency"]) == ("closed_lost", True, "USD")
    assert result["occurred_at"] == T0


def test_pipedrive_sample_becomes_the_record_with_the_person_lookup() -> None:
    delivery = PipedriveAdapter("u", "p").parse(
        request((SAMPLES / "pipedrive_change_deal.json").read_bytes())
    )
    (change,) = delivery.changes
    assert change.lookup_id == "3" and change.email is None
    assert record("pipedrive", complete(change, DealDetails(email="John.Doe@Acme.example"))) == {
        "event_id": "pipedrive:3b7f1d2a-7a8e-4e16-9b2c-52a1f6d0c4e9",
        "crm": "pipedrive",
        "deal_id": "1",
        "lead_id": lead_id_for_email("john.doe@acme.example", IDENTITY),
        "pipeline": "1",
        "stage": "proposal",
        "stage_order": 50,
        "crm_stage": "4",
        "amount": Decimal("2500.00"),
        "currency": "USD",
        "is_won": False,
        "is_lost": False,
        "occurred_at": T0,
        "received_at": NOW,
        "deal_name": "test deal",
    }


def test_pipedrive_ignores_untracked_changes_and_other_entities() -> None:
    body = json.loads((SAMPLES / "pipedrive_change_deal.json").read_text())
    adapter = PipedriveAdapter("u", "p")
    title_only = {**body, "previous": {"title": "old"}}
    assert adapter.parse(request(json.dumps(title_only).encode())).ignored == 1
    person = {**body, "meta": {**body["meta"], "entity": "person"}}
    assert adapter.parse(request(json.dumps(person).encode())).ignored == 1
    v1 = {**body, "meta": {**body["meta"], "version": "1.0"}}
    with pytest.raises(PayloadError, match="v2"):
        adapter.parse(request(json.dumps(v1).encode()))


def test_pipedrive_won_uses_won_time() -> None:
    body = json.loads((SAMPLES / "pipedrive_change_deal.json").read_text())
    body["data"].update(status="won", won_time="2026-03-02T08:00:00Z")
    body["previous"] = {"status": "open"}
    (change,) = PipedriveAdapter("u", "p").parse(request(json.dumps(body).encode())).changes
    result = record("pipedrive", complete(change, DealDetails(email="a@b.example")))
    assert (result["stage"], result["is_won"]) == ("closed_won", True)
    assert result["occurred_at"] == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_stage_map_overrides_pipelines_custom_stages_and_bad_config(tmp_path: Path) -> None:
    stages = StageMap.build({"pipedrive": {"7": "mql", "2:4": "negotiation"}}, {"onboarding": 80})
    assert stages.resolve("pipedrive", "1", "7").name == "mql"
    assert stages.resolve("pipedrive", "2", "4").name == "negotiation"
    assert stages.resolve("pipedrive", "1", "4").name == "proposal"
    assert stages.resolve("generic", "x", "Onboarding").order == 80
    path = tmp_path / "stages.json"
    path.write_text(
        json.dumps(
            {"stage_map": {"hubspot": {"x1": "onboarding"}}, "custom_stages": {"onboarding": 85}}
        )
    )
    from_file = StageMap.build(path=path)
    assert from_file.resolve("hubspot", "default", "X1").order == 85
    with pytest.raises(ConfigurationError, match="neither canonical"):
        StageMap.build({"hubspot": {"x": "heaven"}})
    with pytest.raises(PayloadError, match="both won and lost"):
        stages.resolve("generic", "default", "lead", is_won=True, is_lost=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01T12:00:00Z", T0),
        ("2026-03-01T13:00:00+01:00", T0),
        ("2026-03-01 12:00:00", T0),
        (1772366400000, T0),
        ("1772366400000", T0),
        ("2026-03-01T12:00:00.000+0000", T0),
    ],
)
def test_timestamps(value: Any, expected: datetime) -> None:
    assert timestamp(value, "t") == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "subscriptionType",
        "propertyName",
        "propertyValue",
        "objectId",
        "objectTypeId",
        "portalId",
        "eventId",
        "occurredAt",
        "properties",
        "dealstage",
        "hs_object_id",
        "meta",
        "data",
        "previous",
        "action",
        "entity",
        "version",
        "id",
        "stage_id",
        "status",
        "person_id",
        "OrganizationId",
        "Opportunity",
        "event_id",
        "stage",
        "amount",
    ]
)
DOCUMENTS = st.recursive(
    JSON,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=25,
)


def _parse_all(body: bytes) -> None:
    for adapter, media in [
        (GenericAdapter("s", TOL), "application/json"),
        (HubSpotAdapter("s", frozenset({"v3"}), TOL), "application/json"),
        (PipedriveAdapter("u", "p"), "application/json"),
        (salesforce(), "application/json"),
        (salesforce(), "text/xml"),
    ]:
        try:
            delivery = adapter.parse(request(body, media))
        except PayloadError:
            continue
        for change in delivery.changes:
            with contextlib.suppress(PayloadError):
                record(adapter.crm, complete(change, DealDetails(email="a@b.example")))


@given(DOCUMENTS)
@settings(max_examples=150, deadline=None)
def test_any_json_is_parsed_or_refused_with_a_payload_error(document: Any) -> None:
    _parse_all(json.dumps(document).encode())


def test_objects_where_strings_belong_are_payload_errors_not_crashes() -> None:
    # Found by schemathesis: a JSON object in subscriptionType reached a set lookup.
    hubspot = [{"subscriptionType": {}, "propertyName": {}, "objectTypeId": []}]
    delivery = HubSpotAdapter("s", frozenset({"v3"}), TOL).parse(
        request(json.dumps(hubspot).encode())
    )
    assert delivery.ignored == 1
    pipedrive = {"meta": {"action": {}, "entity": "deal", "version": "2.0"}, "data": {}}
    assert PipedriveAdapter("u", "p").parse(request(json.dumps(pipedrive).encode())).ignored == 1
