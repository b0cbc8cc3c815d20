"""The report and ad-spend CLIs' pure parts: CSV validation, queries, rendering."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from services.attributor import ad_spend, reports
from services.attributor.ad_spend import parse_spend
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings


def test_spend_rows_are_normalized_and_added_up() -> None:
    rows, problems = parse_spend(
        [
            "Date,Channel,Source,Campaign,Spend,Currency,Clicks",
            "2026-03-01,Paid Search,Google,brand,100.50,eur,10",
            "2026-03-01,PAID_SEARCH,google,brand,20,EUR,3",
            "2026-03-01,paid social,linkedin,abm,0,EUR,0",
        ]
    )
    assert problems == []
    assert [(r.day, r.channel, r.source, r.campaign, r.currency, r.spend) for r in rows] == [
        (date(2026, 3, 1), "Paid Search", "google", "brand", "EUR", Decimal("120.50")),
        (date(2026, 3, 1), "Paid Social", "linkedin", "abm", "EUR", Decimal("0.00")),
    ]


def test_every_bad_line_is_named_with_its_field() -> None:
    rows, problems = parse_spend(
        [
            "date,channel,source,campaign,spend,currency",
            "2026-13-01,Paid Search,google,brand,1.00,EUR",
            "2026-03-01,Billboards,google,brand,1.00,EUR",
            "2026-03-01,Email,mailchimp,march,12,50,EUR",
            "2026-03-01,Email,mailchimp,march,-3,EUR",
            "2026-03-01,Email,mailchimp,march,1.005,EUR",
            "2026-03-01,Email,mailchimp,march,1.00,euro",
        ]
    )
    assert [(p.line, p.field) for p in problems] == [
        (2, "date"),
        (3, "channel"),
        (4, "currency"),  # '12,50' unquoted: spend 12, currency '50'
        (5, "spend"),
        (6, "spend"),
        (7, "currency"),
    ]
    assert "line 3: channel: 'Billboards' is not a channel" in str(problems[1])


def test_missing_columns_are_reported_once() -> None:
    rows, problems = parse_spend(["date,channel,spend", "2026-03-01,Email,1"])
    assert rows == [] and [(p.line, p.field) for p in problems] == [(1, "source,campaign,currency")]


def test_a_bad_file_imports_nothing_and_exits_1(
    tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spend.csv"  # type: ignore[operator]
    path.write_text("date,channel,source,campaign,spend,currency\n2026-03-01,Nope,x,y,1,EUR\n")
    assert ad_spend.main(["import", str(path)]) == 1
    err = capsys.readouterr().err
    assert "line 2: channel" in err and "nothing imported" in err


def test_unreadable_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert ad_spend.main(["import", "/nonexistent/spend.csv"]) == 1
    assert "cannot read" in capsys.readouterr().err


def parse(*argv: str) -> reports.Query:
    return reports.build_query(reports._parser().parse_args(list(argv)))


def test_pipeline_query_groups_by_the_chosen_dimension() -> None:
    query = parse("pipeline", "--model", "w_shaped", "--stage", "proposal", "--by", "campaign")
    assert "FROM report_pipeline" in query.sql
    assert "GROUP BY stage_order, stage, channel, source, campaign, currency" in query.sql
    assert query.parameters == {"model": "w_shaped", "stage": "proposal"}
    assert "AND stage" not in parse("pipeline").sql


def test_journey_by_email_uses_the_lead_id_of_the_pipeline() -> None:
    query = parse("journey", "--email", " Jane@Example.com ")
    assert query.parameters == {"lead": lead_id_for_email("jane@example.com", IdentitySettings())}
    assert parse("journey", "abc").parameters == {"lead": "abc"}


def test_roi_by_campaign_reads_the_campaign_view() -> None:
    assert "report_roi_by_campaign" in parse("roi", "--by", "campaign").sql
    assert "report_roi_by_channel" in parse("roi").sql


def test_unknown_model_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        reports._parser().parse_args(["revenue", "--model", "magic"])
    assert exc.value.code == 2


COLUMNS = ["channel", "deals", "amount", "roas"]
ROWS = [
    ["Paid Search", Decimal("1.500000000000"), Decimal("12000.00"), 4.0],
    ["Email", Decimal("0.333333333333"), Decimal("6000.00"), None],
]


def test_table_output_aligns_numbers_right_and_rounds_credits() -> None:
    lines = reports.render(COLUMNS, ROWS, "table").splitlines()
    assert lines[0].split() == COLUMNS
    assert lines[2].split() == ["Paid", "Search", "1.5", "12000.00", "4.0000"]
    assert lines[3].split() == ["Email", "0.3333", "6000.00"]
    assert lines[2].index("12000.00") < lines[3].index("6000.00")  # right-aligned


def test_json_output_keeps_decimals_exact() -> None:
    data = json.loads(reports.render(COLUMNS, ROWS, "json"))
    assert data[1] == {
        "channel": "Email",
        "deals": "0.333333333333",
        "amount": "6000.00",
        "roas": None,
    }


def test_csv_output_has_a_header() -> None:
    assert reports.render(COLUMNS, ROWS, "csv").splitlines() == [
        "channel,deals,amount,roas",
        "Paid Search,1.500000000000,12000.00,4.0",
        "Email,0.333333333333,6000.00,",
    ]


def test_empty_table_says_so() -> None:
    assert reports.render(COLUMNS, [], "table").endswith("(no rows)")
