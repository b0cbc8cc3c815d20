"""The attributor as a real process on the real broker and the embedded warehouse: every report, exactly."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schemas.topics import CRM_DEAL_STAGES, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.attributor import ad_spend, reports
from services.attributor.adapters.clickhouse import StateStore
from services.common.avro import AvroCodec
from services.common.clickhouse import get_client
from services.common.kafka import KafkaPublisher
from services.common.settings import ClickHouseSettings, KafkaSettings
from tests.fixtures.processes import ServiceProcess

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REPORT_VIEWS = {
    "report_pipeline": "model, stage, channel, source, medium, campaign, currency",
    "report_revenue": "model, channel, source, medium, campaign, currency",
    "report_leads_by_channel": "model, channel, source, medium, campaign",
    "report_lead_journey": "lead_id, occurred_at, event, touchpoint_id, deal_id, stage",
    "report_landing_pages": "model, stage, landing_page, currency",
    "report_roi_by_channel": "model, channel, currency",
    "report_roi_by_campaign": "model, channel, source, campaign, currency",
}


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


class Inputs:
    """Publishes stitcher and crm_ingest records, keyed as they are in production."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.publisher = KafkaPublisher(kafka, "attributor-test")
        self.codecs = {
            name: AvroCodec.for_topic(name)
            for name in (TOUCHPOINTS_STITCHED.name, CRM_DEAL_STAGES.name, IDENTITY_LINKS.name)
        }
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def _send(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.sent.append((topic, key, record))
        value = self.codecs[topic].encode(record)
        self.publisher.produce(self.kafka.topic(topic), key, value).result(timeout=30)

    def touch(
        self,
        tid: str,
        lead: str,
        days: float,
        channel: str,
        source: str | None = None,
        medium: str | None = None,
        campaign: str | None = None,
        page: str = "/",
        retracted: bool = False,
    ) -> None:
        self._send(
            TOUCHPOINTS_STITCHED.name,
            lead,
            {
                "touchpoint_id": tid,
                "lead_id": lead,
                "anonymous_id": f"anon-{lead}",
                "site_id": "dev",
                "occurred_at": at(days),
                "channel": channel,
                "source": source,
                "medium": medium,
                "campaign": campaign,
                "landing_page": f"https://example.com{page}",
                "retracted": retracted,
            },
        )

    def link(self, lead: str, days: float) -> None:
        anon = f"anon-{lead}"
        self._send(
            IDENTITY_LINKS.name,
            anon,
            {
                "anonymous_id": anon,
                "lead_id": lead,
                "valid_from": at(days),
                "identified_by": f"ident-{lead}",
            },
        )

    def stage(
        self,
        event_id: str,
        lead: str,
        deal: str,
        stage: str,
        order: int,
        days: float,
        amount: str | None,
        won: bool = False,
        lost: bool = False,
    ) -> None:
        self._send(
            CRM_DEAL_STAGES.name,
            lead,
            {
                "event_id": event_id,
                "crm": "generic",
                "deal_id": deal,
                "lead_id": lead,
                "stage": stage,
                "stage_order": order,
                "crm_stage": stage,
                "amount": None if amount is None else Decimal(amount),
                "currency": None if amount is None else "EUR",
                "is_won": won,
                "is_lost": lost,
                "occurred_at": at(days),
                "received_at": at(days),
            },
        )

    def resend_all(self) -> None:
        """Publish every record again (a producer-side replay)."""
        for topic, key, record in list(self.sent):
            self._send(topic, key, record)

    def close(self) -> None:
        self.publisher.close()


def three_leads(inputs: Inputs) -> None:
    """Alice: Paid Search then Email, won 12,000. Bob: Organic then Paid Social, proposal 5,000. Carol: Direct, no deal."""
    inputs.touch("a1", "alice", 0, "PAID_SEARCH", "google", "cpc", "brand", "/pricing")
    inputs.touch("a2", "alice", 2, "EMAIL", "newsletter", "email", "march", "/blog")
    inputs.link("alice", 2)
    inputs.stage("a-e1", "alice", "deal-a", "opportunity", 40, 3, "10000.00")
    inputs.stage("a-e2", "alice", "deal-a", "proposal", 50, 4, "10000.00")
    inputs.stage("a-e3", "alice", "deal-a", "closed_won", 70, 6, "12000.00", won=True)
    inputs.touch("b1", "bob", 1, "ORGANIC_SEARCH", "google", "organic", None, "/blog")
    inputs.touch("b2", "bob", 3, "PAID_SOCIAL", "linkedin", "paid_social", "abm", "/demo")
    inputs.link("bob", 3)
    inputs.stage("b-e1", "bob", "deal-b", "proposal", 50, 5, "5000.00")
    inputs.touch("c1", "carol", 2, "DIRECT", "(direct)", "(none)", None, "/")
    inputs.link("carol", 2)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def inputs(kafka_settings: KafkaSettings) -> Iterator[Inputs]:
    made = Inputs(kafka_settings)
    yield made
    made.close()


@pytest.fixture
def clickhouse(clickhouse_settings: ClickHouseSettings) -> Iterator[Any]:
    client = get_client(clickhouse_settings)
    yield client
    client.close()


@pytest.fixture
def start_attributor(
    service_processes: Callable[..., ServiceProcess],
    kafka_settings: KafkaSettings,
    clickhouse_settings: ClickHouseSettings,
) -> Callable[..., ServiceProcess]:
    group = f"attributor-{uuid.uuid4().hex[:8]}"

    def start(group_id: str = group, **extra: str) -> ServiceProcess:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
            "KAFKA_PARTITIONS": str(kafka_settings.partitions),
            "CLICKHOUSE_HOST": clickhouse_settings.host,
            "CLICKHOUSE_PORT": str(clickhouse_settings.port),
            "CLICKHOUSE_DATABASE": clickhouse_settings.database,
            "ATTRIBUTOR_CONSUMER_GROUP": group_id,
            "ATTRIBUTOR_BATCH_MAX_SECONDS": "0.3",
            "ATTRIBUTOR_MARKOV_REFRESH_SECONDS": "0",
            # The broker's minimum: a restart after a crash waits this long for the partitions.
            "ATTRIBUTOR_SESSION_TIMEOUT_MS": "6000",
            "ATTRIBUTOR_LOG_LEVEL": "INFO",
            **extra,
        }
        return service_processes(
            "services.attributor", env, name=f"attributor-{uuid.uuid4().hex[:4]}"
        ).start()

    return start


# --------------------------------------------------------------------------- helpers


def rows(client: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql).result_rows]


def snapshot(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every report view, fully, in a stable order."""
    return {
        view: rows(client, f"SELECT * FROM {view} ORDER BY {order}")
        for view, order in REPORT_VIEWS.items()
    }


def wait_for(
    condition: Callable[[], bool], what: str, proc: ServiceProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{proc.tail()}")
        time.sleep(0.3)


def revenue(client: Any, model: str) -> dict[str, Decimal]:
    return {
        r[0]: r[1]
        for r in rows(
            client,
            f"SELECT channel, sum(revenue) FROM report_revenue WHERE model = '{model}' GROUP BY channel",
        )
    }


def proposal(client: Any, model: str) -> dict[str, tuple[Decimal, Decimal, Decimal]]:
    return {
        r[0]: (r[1], r[2], r[3])
        for r in rows(
            client,
            "SELECT channel, sum(amount), sum(open_amount), sum(lost_amount) FROM report_pipeline "
            f"WHERE model = '{model}' AND stage = 'proposal' GROUP BY channel",
        )
    }


def leads_by_channel(client: Any, model: str) -> dict[str, Decimal]:
    return {
        r[0]: r[1]
        for r in rows(
            client,
            "SELECT channel, sum(leads) FROM report_leads_by_channel "
            f"WHERE model = '{model}' GROUP BY channel",
        )
    }


def baseline_ready(client: Any) -> bool:
    return (
        revenue(client, "last_touch") == {"Email": Decimal("12000.00")}
        and proposal(client, "first_touch").get("Organic Search", (0,))[0] == Decimal("5000.00")
        and sum(leads_by_channel(client, "first_touch").values()) == 3
    )


def assert_conversions_sum_to_one(client: Any) -> None:
    sums = rows(
        client,
        "SELECT lead_id, deal_id, stage, model, sum(credit) AS s FROM attribution_credits_current "
        "GROUP BY lead_id, deal_id, stage, model HAVING s != 1",
    )
    assert sums == []


def write_spend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: ClickHouseSettings
) -> None:
    for name, value in {
        "CLICKHOUSE_HOST": settings.host,
        "CLICKHOUSE_PORT": str(settings.port),
        "CLICKHOUSE_DATABASE": settings.database,
    }.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "spend.csv"
    path.write_text(
        "date,channel,source,campaign,spend,currency\n"
        "2026-03-01,Paid Search,google,brand,2000.00,EUR\n"
        "2026-03-02,PAID_SEARCH,Google,brand,1000.00,EUR\n"
        "2026-03-01,Paid Social,linkedin,abm,1000.00,EUR\n"
    )
    assert ad_spend.main(["import", str(path)]) == 0


# --------------------------------------------------------------------------- tests


def test_three_leads_give_the_expected_rows_in_every_report(
    inputs: Inputs,
    clickhouse: Any,
    clickhouse_settings: ClickHouseSettings,
    start_attributor: Callable[..., ServiceProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    three_leads(inputs)
    proc = start_attributor()
    wait_for(lambda: baseline_ready(clickhouse), "the three leads attributed", proc)
    write_spend(tmp_path, monkeypatch, clickhouse_settings)

    # Revenue: Alice's 12,000 (latest amount) under each model.
    assert revenue(clickhouse, "first_touch") == {"Paid Search": Decimal("12000.00")}
    assert revenue(clickhouse, "linear") == {
        "Paid Search": Decimal("6000.00"),
        "Email": Decimal("6000.00"),
    }
    # Proposal stage: amount, open and lost parts; Alice's deal is won (not open).
    assert proposal(clickhouse, "first_touch") == {
        "Paid Search": (Decimal("12000.00"), Decimal("0.00"), Decimal("0.00")),
        "Organic Search": (Decimal("5000.00"), Decimal("5000.00"), Decimal("0.00")),
    }
    assert proposal(clickhouse, "last_touch") == {
        "Email": (Decimal("12000.00"), Decimal("0.00"), Decimal("0.00")),
        "Paid Social": (Decimal("5000.00"), Decimal("5000.00"), Decimal("0.00")),
    }
    # Leads: first touches; the lead-creation touch is the last one at or before identification.
    assert leads_by_channel(clickhouse, "first_touch") == {
        "Paid Search": 1,
        "Organic Search": 1,
        "Direct": 1,
    }
    assert leads_by_channel(clickhouse, "last_touch") == {"Email": 1, "Paid Social": 1, "Direct": 1}
    # The journey of one lead: 2 touchpoints, creation, 3 stages, in time order.
    journey = rows(
        clickhouse,
        "SELECT event, touchpoint_id, stage FROM report_lead_journey WHERE lead_id = 'alice' "
        "ORDER BY occurred_at, multiIf(event = 'touchpoint', 0, event = 'lead_created', 1, 2)",
    )
    assert journey == [
        ("touchpoint", "a1", ""),
        ("touchpoint", "a2", ""),
        ("lead_created", "", ""),
        ("deal_stage", "", "opportunity"),
        ("deal_stage", "", "proposal"),
        ("deal_stage", "", "closed_won"),
    ]
    # Landing pages, linear, closed won: /pricing and /blog share Alice's deal.
    pages = rows(
        clickhouse,
        "SELECT landing_page, influenced_deals, amount FROM report_landing_pages "
        "WHERE model = 'linear' AND stage = 'closed_won' ORDER BY landing_page",
    )
    assert pages == [
        ("https://example.com/blog", 1, Decimal("6000.00")),
        ("https://example.com/pricing", 1, Decimal("6000.00")),
    ]
    # ROI: Paid Search spent 3,000 (two rows, source lower-cased), earned 12,000 first touch.
    roi = rows(
        clickhouse,
        "SELECT channel, spend, revenue, roas, roi FROM report_roi_by_channel "
        "WHERE model = 'first_touch' ORDER BY channel",
    )
    assert roi == [
        ("Paid Search", Decimal("3000.00"), Decimal("12000.00"), 4.0, 3.0),
        ("Paid Social", Decimal("1000.00"), Decimal("0.00"), 0.0, -1.0),
    ]
    campaign_roi = rows(
        clickhouse,
        "SELECT source, campaign, revenue, roas FROM report_roi_by_campaign "
        "WHERE model = 'linear' ORDER BY campaign",
    )
    assert campaign_roi == [
        ("linkedin", "abm", Decimal("0.00"), 0.0),
        ("google", "brand", Decimal("6000.00"), 2.0),
    ]
    assert_conversions_sum_to_one(clickhouse)

    # The CLI prints the same numbers (writer user: the test database is new).
    capsys.readouterr()
    assert (
        reports.main(
            [
                "pipeline",
                "--writer",
                "--model",
                "first_touch",
                "--stage",
                "proposal",
                "--format",
                "json",
            ]
        )
        == 0
    )
    printed = {r["channel"]: r["amount"] for r in json.loads(capsys.readouterr().out)}
    assert printed == {"Paid Search": "12000.00", "Organic Search": "5000.00"}
    assert reports.main(["roi", "--writer", "--model", "first_touch", "--format", "csv"]) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0] == "channel,currency,spend,revenue,deals_won,roas,roi"
    assert csv_out[1].startswith("Paid Search,EUR,3000.00,12000.00,")
    assert reports.main(["journey", "alice"]) == 0  # the read-only BI user
    table = capsys.readouterr().out
    assert "lead_created" in table and "closed_won" in table and "/pricing" in table

    # The data-driven model's input: every lead's channel path, converted = a won deal.
    paths = sorted((tuple(p), c) for p, c in StateStore(clickhouse).channel_paths())
    assert paths == [
        (("DIRECT",), False),
        (("ORGANIC_SEARCH", "PAID_SOCIAL"), False),
        (("PAID_SEARCH", "EMAIL"), True),
    ]


def test_late_touchpoint_amount_change_and_lost_deal_replace_the_credits(
    inputs: Inputs, clickhouse: Any, start_attributor: Callable[..., ServiceProcess]
) -> None:
    three_leads(inputs)
    proc = start_attributor()
    wait_for(lambda: baseline_ready(clickhouse), "the three leads attributed", proc)

    # A late touchpoint for Bob, before everything else: he now came from a referral.
    inputs.touch("b0", "bob", 0.5, "REFERRAL", "partner.example", "referral", None, "/partners")
    wait_for(
        lambda: proposal(clickhouse, "first_touch").get("Referral", (0,))[0] == Decimal("5000.00"),
        "Bob re-attributed to Referral",
        proc,
    )
    assert proposal(clickhouse, "first_touch") == {
        "Paid Search": (Decimal("12000.00"), Decimal("0.00"), Decimal("0.00")),
        "Referral": (Decimal("5000.00"), Decimal("5000.00"), Decimal("0.00")),
    }
    assert proposal(clickhouse, "linear")["Organic Search"][0] == Decimal("1666.67")

    # Alice's won amount changes; Bob's deal is lost.
    inputs.stage("a-e4", "alice", "deal-a", "closed_won", 70, 8, "15000.00", won=True)
    inputs.stage("b-e2", "bob", "deal-b", "closed_lost", 70, 9, "5000.00", lost=True)
    wait_for(
        lambda: (
            revenue(clickhouse, "first_touch") == {"Paid Search": Decimal("15000.00")}
            and proposal(clickhouse, "first_touch").get("Referral", (0, 0, 0))[2]
            == Decimal("5000.00")
        ),
        "amount change and lost deal",
        proc,
    )
    assert proposal(clickhouse, "first_touch") == {
        "Paid Search": (Decimal("15000.00"), Decimal("0.00"), Decimal("0.00")),
        "Referral": (Decimal("5000.00"), Decimal("0.00"), Decimal("5000.00")),
    }
    # Bob's touch retracted (moved to another lead): Paid Social keeps the last touch.
    inputs.touch(
        "b2", "bob", 3, "PAID_SOCIAL", "linkedin", "paid_social", "abm", "/demo", retracted=True
    )
    wait_for(
        lambda: "Paid Social" not in proposal(clickhouse, "last_touch"),
        "retracted touch leaves Bob's journey",
        proc,
    )
    assert proposal(clickhouse, "last_touch")["Organic Search"][0] == Decimal("5000.00")
    assert rows(clickhouse, "SELECT count() FROM touchpoints_current WHERE lead_id = 'bob'") == [
        (2,)
    ]
    # Superseded computations are in the table, never in the reports.
    runs = rows(clickhouse, "SELECT count() FROM attribution_runs WHERE deal_id = 'deal-b'")[0][0]
    assert runs >= 3
    assert_conversions_sum_to_one(clickhouse)


def test_replaying_every_input_topic_from_the_start_changes_no_report(
    inputs: Inputs, clickhouse: Any, start_attributor: Callable[..., ServiceProcess]
) -> None:
    three_leads(inputs)
    first = start_attributor()
    wait_for(lambda: baseline_ready(clickhouse), "the three leads attributed", first)
    before = snapshot(clickhouse)
    assert first.stop() == 0
    versions = rows(clickhouse, "SELECT max(computed_version) FROM attribution_runs")[0][0]

    # A new consumer group reads every topic from the start, and the producers resend it all.
    inputs.resend_all()
    again = start_attributor(group_id=f"replay-{uuid.uuid4().hex[:6]}")
    wait_for(
        lambda: (
            rows(
                clickhouse,
                f"SELECT uniqExact(lead_id) FROM attribution_runs WHERE computed_version > {versions}",
            )[0][0]
            == 3
        ),
        "every lead recomputed after the replay",
        again,
    )
    time.sleep(1.0)  # let the last batch of the resent copies flush too
    wait_for(
        lambda: snapshot(clickhouse) == before, "reports equal to before the replay", again, 30
    )
    assert_conversions_sum_to_one(clickhouse)


def test_kill_between_clickhouse_insert_and_offset_commit_changes_no_report(
    inputs: Inputs, clickhouse: Any, start_attributor: Callable[..., ServiceProcess]
) -> None:
    three_leads(inputs)
    # One batch holds every input; the worker exits hard right after writing it, before the
    # offset commit, exactly where a kill -9 hurts most.
    crashing = start_attributor(
        ATTRIBUTOR_EXIT_AFTER_FLUSHES="1",
        ATTRIBUTOR_BATCH_MAX_SECONDS="6",
        ATTRIBUTOR_BATCH_MAX_MESSAGES="100000",
    )
    assert crashing.process is not None
    crashing.process.wait(60)
    assert crashing.process.returncode == 86, crashing.tail()
    assert baseline_ready(clickhouse)  # the insert happened; the commit did not
    before = snapshot(clickhouse)
    runs_written = rows(clickhouse, "SELECT count() FROM attribution_runs")[0][0]

    restarted = start_attributor()
    wait_for(
        lambda: rows(clickhouse, "SELECT count() FROM attribution_runs")[0][0] > runs_written,
        "the uncommitted messages reprocessed",
        restarted,
    )
    time.sleep(1.0)
    wait_for(
        lambda: snapshot(clickhouse) == before, "reports equal to before the crash", restarted, 30
    )
    assert revenue(clickhouse, "linear") == {
        "Paid Search": Decimal("6000.00"),
        "Email": Decimal("6000.00"),
    }
    assert rows(clickhouse, "SELECT count() FROM report_lead_journey WHERE lead_id = 'alice'") == [
        (6,)
    ]
    assert_conversions_sum_to_one(clickhouse)
