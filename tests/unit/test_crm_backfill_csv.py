"""Backfill CSV parsing: per-CRM columns, line numbers of rejected rows, original timestamps."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from services.crm_ingest.backfill import DEFAULT_COLUMNS, main, read_rows
from services.crm_ingest.errors import PayloadError

PIPEDRIVE_CSV = """Deal - ID,Deal - Title,Deal - Stage,Deal - Pipeline,Deal - Value,Deal - Currency,Deal - Status,Deal - Update time,Person - Email
1,"Acme, multi
line title",Proposal Made,Sales,2500,USD,open,2026-03-01 12:00:00,a@acme.example
2,Globex,Negotiations Started,Sales,abc,USD,open,2026-03-01 12:00:00,b@globex.example
3,Initech,Proposal Made,Sales,100,EUR,won,2026-03-02 08:00:00,c@initech.example
4,Hooli,Proposal Made,Sales,100,EUR,open,,d@hooli.example
"""


def test_rows_carry_the_line_they_start_on_and_rejections_name_the_column() -> None:
    rows = list(read_rows(io.StringIO(PIPEDRIVE_CSV), "pipedrive", DEFAULT_COLUMNS["pipedrive"]))
    assert [row.line for row in rows] == [2, 4, 5, 6]
    first = rows[0].change
    assert first is not None
    assert first.deal_name == "Acme, multi\nline title"
    assert first.occurred_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert first.event_id == "pipedrive:backfill:1:Proposal Made:1772366400000"
    assert rows[1].error is not None and rows[1].error.field == "Deal - Value"
    won = rows[2].change
    assert won is not None and won.is_won and not won.is_lost
    assert rows[3].error is not None and rows[3].error.field == "Deal - Update time"


def test_a_missing_column_is_reported_before_any_row() -> None:
    with pytest.raises(PayloadError, match="--column email="):
        list(
            read_rows(
                io.StringIO("Record ID,Deal Stage,Last Modified Date\n1,x,2026-01-01\n"),
                "hubspot",
                DEFAULT_COLUMNS["hubspot"],
            )
        )


def test_salesforce_closed_and_won_columns() -> None:
    csv = "Opportunity ID,Stage,Last Modified Date,Contact Email,Won,Closed\n006A,Closed Lost,3/1/2026,a@b.example,false,true\n"
    columns = DEFAULT_COLUMNS["salesforce"]
    (row,) = read_rows(io.StringIO(csv), "salesforce", columns, "%m/%d/%Y")
    assert row.change is not None and row.change.is_lost and not row.change.is_won
    assert row.change.occurred_at == datetime(2026, 3, 1, tzinfo=UTC)


def test_usage_errors_exit_2_without_a_traceback(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["generic", str(tmp_path / "missing.csv"), "--dry-run", "--quiet"]) == 2
    assert "crm-backfill:" in capsys.readouterr().err


def test_dry_run_counts_and_reports(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CRM_INGEST_DEDUPE_PATH", str(tmp_path / "d.sqlite3"))
    path = tmp_path / "deals.csv"
    path.write_text(PIPEDRIVE_CSV)
    assert main(["pipedrive", str(path), "--dry-run", "--quiet"]) == 1
    out = capsys.readouterr()
    assert "2 valid (dry run), 0 already delivered, 2 rejected of 4 rows" in out.out
    assert f"{path}:4: Deal - Value: must be a decimal number" in out.err
    assert f"{path}:6: Deal - Update time: is missing" in out.err
