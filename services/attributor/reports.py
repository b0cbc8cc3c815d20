"""`closedloop report ...`: the closed-loop reports from the ClickHouse views, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.attributor.models import Model
from services.common.clickhouse import get_client
from services.common.leads import lead_id_for_email
from services.common.settings import ClickHouseSettings, IdentitySettings

MODELS = [m.value for m in Model]
DIMENSIONS = {
    "channel": ["channel"],
    "source": ["channel", "source", "medium"],
    "campaign": ["channel", "source", "campaign"],
}
FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class Query:
    """A report's SQL with client-side bound parameters (``%(name)s``)."""

    sql: str
    parameters: dict[str, Any]


def pipeline_query(model: str, stage: str | None, by: str) -> Query:
    """Pipeline and revenue per stage by channel/source/campaign under one model."""
    dims = ", ".join(DIMENSIONS[by])
    where = "model = %(model)s" + (" AND stage = %(stage)s" if stage else "")
    return Query(
        f"SELECT stage, {dims}, currency, sum(deals) AS deals, sum(amount) AS amount, "
        "sum(open_amount) AS open_amount, sum(won_amount) AS won_amount, "
        f"sum(lost_amount) AS lost_amount FROM report_pipeline WHERE {where} "
        f"GROUP BY stage_order, stage, {dims}, currency "
        f"ORDER BY stage_order, currency, amount DESC, {dims}",
        {"model": model, "stage": stage},
    )


def revenue_query(model: str, by: str) -> Query:
    """Closed-won revenue by channel/source/campaign under one model."""
    dims = ", ".join(DIMENSIONS[by])
    return Query(
        f"SELECT {dims}, currency, sum(deals_won) AS deals_won, sum(revenue) AS revenue "
        f"FROM report_revenue WHERE model = %(model)s GROUP BY {dims}, currency "
        f"ORDER BY currency, revenue DESC, {dims}",
        {"model": model},
    )


def leads_query(model: str, by: str) -> Query:
    """Leads created by channel/source/campaign under one model."""
    dims = ", ".join(DIMENSIONS[by])
    return Query(
        f"SELECT {dims}, sum(leads) AS leads FROM report_leads_by_channel "
        f"WHERE model = %(model)s GROUP BY {dims} ORDER BY leads DESC, {dims}",
        {"model": model},
    )


def journey_query(lead_id: str) -> Query:
    """Every touchpoint, the lead creation and every deal stage of one lead, in time order."""
    return Query(
        "SELECT occurred_at, event, channel, source, medium, campaign, term, landing_page, "
        "touchpoint_id, deal_id, stage, amount, currency FROM report_lead_journey "
        "WHERE lead_id = %(lead)s ORDER BY occurred_at, "
        "multiIf(event = 'touchpoint', 0, event = 'lead_created', 1, 2), touchpoint_id, deal_id",
        {"lead": lead_id},
    )


def landing_pages_query(model: str, stage: str | None) -> Query:
    """Conversions and amounts each landing page influenced under one model."""
    where = "model = %(model)s" + (" AND stage = %(stage)s" if stage else "")
    return Query(
        "SELECT stage, landing_page, currency, influenced_deals, deals, amount "
        f"FROM report_landing_pages WHERE {where} "
        "ORDER BY stage, currency, amount DESC, deals DESC, landing_page",
        {"model": model, "stage": stage},
    )


def roi_query(model: str, by: str) -> Query:
    """ROI and ROAS by channel or campaign where ad spend is loaded."""
    if by == "campaign":
        return Query(
            "SELECT channel, source, campaign, currency, spend, revenue, deals_won, roas, roi "
            "FROM report_roi_by_campaign WHERE model = %(model)s "
            "ORDER BY currency, spend DESC, channel, source, campaign",
            {"model": model},
        )
    return Query(
        "SELECT channel, currency, spend, revenue, deals_won, roas, roi "
        "FROM report_roi_by_channel WHERE model = %(model)s ORDER BY currency, spend DESC, channel",
        {"model": model},
    )


# --------------------------------------------------------------------------- output


def _plain(value: Any) -> Any:
    """A JSON-friendly value: Decimals as strings (exact), times as ISO-8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            # Credits (12 places) read better as 4.
            return f"{value.quantize(Decimal('0.0001')).normalize():f}"
        return f"{value:f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """``rows`` as an aligned text table, a JSON array of objects, or CSV with a header."""
    if fmt == "json":
        return json.dumps(
            [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows], indent=2
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_plain(v) if v is not None else "" for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows)
        and all(isinstance(r[i], Decimal | int | float) for r in rows if r[i] is not None)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="closedloop report",
        description="Print a closed-loop report from ClickHouse (CLICKHOUSE_* settings, "
        "read-only user unless --writer).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--format", choices=FORMATS, default="table", help="output format")
    common.add_argument("--writer", action="store_true", help="connect as the writer user")
    sub = parser.add_subparsers(dest="report", required=True)

    def with_model(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", choices=MODELS, default="linear", help="attribution model")

    pipeline = sub.add_parser(
        "pipeline",
        parents=[common],
        help="pipeline and revenue per stage by channel/source/campaign",
    )
    with_model(pipeline)
    pipeline.add_argument("--stage", help="only this stage (e.g. proposal, closed_won)")
    pipeline.add_argument("--by", choices=list(DIMENSIONS), default="channel")
    revenue = sub.add_parser("revenue", parents=[common], help="closed-won revenue")
    with_model(revenue)
    revenue.add_argument("--by", choices=list(DIMENSIONS), default="channel")
    leads = sub.add_parser("leads", parents=[common], help="leads created by channel")
    with_model(leads)
    leads.add_argument("--by", choices=list(DIMENSIONS), default="channel")
    journey = sub.add_parser("journey", parents=[common], help="the journey of one lead")
    who = journey.add_mutually_exclusive_group(required=True)
    who.add_argument("lead_id", nargs="?", help="the lead ID")
    who.add_argument("--email", help="the lead's e-mail (hashed with IDENTITY_SECRET)")
    pages = sub.add_parser("landing-pages", parents=[common], help="landing-page influence")
    with_model(pages)
    pages.add_argument("--stage", help="only this stage (lead_created for leads)")
    roi = sub.add_parser("roi", parents=[common], help="ROI and ROAS where ad spend is loaded")
    with_model(roi)
    roi.add_argument("--by", choices=["channel", "campaign"], default="channel")
    return parser


def build_query(args: argparse.Namespace) -> Query:
    """The query of the parsed command line."""
    if args.report == "pipeline":
        return pipeline_query(args.model, args.stage, args.by)
    if args.report == "revenue":
        return revenue_query(args.model, args.by)
    if args.report == "leads":
        return leads_query(args.model, args.by)
    if args.report == "journey":
        lead_id = args.lead_id or lead_id_for_email(args.email, IdentitySettings())
        return journey_query(lead_id)
    if args.report == "landing-pages":
        return landing_pages_query(args.model, args.stage)
    return roi_query(args.model, args.by)


def run_query(
    query: Query, settings: ClickHouseSettings, readonly: bool
) -> tuple[list[str], list[Any]]:
    """Column names and rows of ``query``."""
    client = get_client(settings, readonly=readonly)
    try:
        result = client.query(query.sql, parameters=query.parameters)
        return list(result.column_names), list(result.result_rows)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """`closedloop report <pipeline|revenue|leads|journey|landing-pages|roi> [options]`."""
    args = _parser().parse_args(argv)
    settings = ClickHouseSettings()
    query = build_query(args)
    try:
        columns, rows = run_query(query, settings, readonly=not args.writer)
    except Exception as exc:  # noqa: BLE001 - a CLI prints the reason, not a traceback
        print(
            f"report: query on ClickHouse {settings.host}:{settings.port}/{settings.database} "
            f"failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
            file=sys.stderr,
        )
        return 1
    print(render(columns, rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
