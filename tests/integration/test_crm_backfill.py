"""`closedloop crm-backfill` against the real broker: events with original times, rejects, reruns."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings, KafkaSettings
from services.crm_ingest.backfill import main
from tests.integration.test_crm_ingest import read_topic

HUBSPOT_CSV = """Record ID,Deal Name,Deal Stage,Pipeline,Amount,Currency,Last Modified Date,Contact Email
101,Acme,Appointment Scheduled,default,1000,EUR,2026-01-05 09:30:00,a@acme.example
102,Globex,Closed Won,default,25000.5,USD,2026-02-10T16:00:00Z,b@globex.example
103,Initech,Somewhere Else,default,10,USD,2026-02-11 10:00:00,c@initech.example
104,Hooli,Contract Sent,default,,,1770000000000,d@hooli.example
105,Umbrella,Closed Lost,default,5,USD,2026-02-12 10:00:00,not-an-email
"""


def test_backfill_publishes_rows_with_their_original_times(
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("CRM_INGEST_DEDUPE_PATH", str(tmp_path / "dedupe.sqlite3"))
    path = tmp_path / "hubspot-deals.csv"
    path.write_text(HUBSPOT_CSV)

    assert main(["hubspot", str(path)]) == 1
    out = capsys.readouterr()
    assert "3 published, 0 already delivered, 2 rejected of 5 rows" in out.out
    assert f"{path}:4: stage: unknown hubspot stage 'Somewhere Else'" in out.err
    assert f"{path}:6: email: is not an e-mail address" in out.err
    assert "crm-backfill" in out.err  # the progress bar

    records = {r["deal_id"]: r for _k, r in read_topic(kafka_settings, "crm.deal_stages", 3)}
    assert sorted(records) == ["101", "102", "104"]
    won = records["102"]
    assert won["occurred_at"] == datetime(2026, 2, 10, 16, tzinfo=UTC)
    assert (won["stage"], won["is_won"], won["amount"], won["currency"]) == (
        "closed_won",
        True,
        Decimal("25000.50"),
        "USD",
    )
    assert won["lead_id"] == lead_id_for_email("b@globex.example", IdentitySettings())
    assert records["101"]["occurred_at"] == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    assert (records["104"]["stage"], records["104"]["amount"]) == ("negotiation", None)

    # A rerun of the same file publishes nothing new.
    assert main(["hubspot", str(path), "--quiet"]) == 1
    assert "0 published, 3 already delivered" in capsys.readouterr().out
    assert len(read_topic(kafka_settings, "crm.deal_stages", 3, settle=2.0)) == 3


def test_backfill_with_the_broker_down_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.broker.local import free_port

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("KAFKA_DELIVERY_TIMEOUT_MS", "1000")
    monkeypatch.setenv("CRM_INGEST_DEDUPE_PATH", str(tmp_path / "dedupe.sqlite3"))
    path = tmp_path / "deals.csv"
    path.write_text(HUBSPOT_CSV)
    assert main(["hubspot", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "broker did not acknowledge 3 event(s); 0 published so far" in err
    assert "Traceback" not in err
