"""`closedloop ad-spend import FILE.csv`: load ad spend per day, channel, source and campaign."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from schemas.channels import Channel
from services.common.clickhouse import get_client
from services.common.settings import ClickHouseSettings

REQUIRED = ("date", "channel", "source", "campaign", "spend", "currency")
CENT = Decimal("0.01")
_CHANNELS = {c.value.lower(): c.value for c in Channel} | {c.name.lower(): c.value for c in Channel}


@dataclass(frozen=True)
class SpendRow:
    """Spend of one day, channel, source and campaign in one currency."""

    day: date
    channel: str
    source: str
    campaign: str
    currency: str
    spend: Decimal


@dataclass(frozen=True)
class Problem:
    """A CSV line that cannot be imported: which line, which field, what is wrong."""

    line: int
    field: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.problem}"


def parse_spend(lines: Iterable[str]) -> tuple[list[SpendRow], list[Problem]]:
    """Rows of an ad-spend CSV (header: date,channel,source,campaign,spend,currency), and every problem.

    ``channel`` is a channel name (``Paid Search``) or symbol (``PAID_SEARCH``), any case;
    ``source`` is lower-cased like the stitcher's sources; ``spend`` is a non-negative
    decimal with at most two places. Rows with the same day, channel, source, campaign
    and currency are added up (several ad groups of one campaign).
    """
    reader = csv.DictReader(lines)
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        return [], [Problem(1, ",".join(missing), "missing column(s) in the header")]
    reader.fieldnames = header
    totals: dict[tuple[date, str, str, str, str], Decimal] = defaultdict(Decimal)
    problems: list[Problem] = []
    for number, raw in enumerate(reader, start=2):
        row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        before = len(problems)
        try:
            day = date.fromisoformat(row["date"])
        except ValueError:
            problems.append(Problem(number, "date", f"{row['date']!r} is not a YYYY-MM-DD date"))
        channel = _CHANNELS.get(row["channel"].lower())
        if channel is None:
            problems.append(
                Problem(
                    number,
                    "channel",
                    f"{row['channel']!r} is not a channel ({', '.join(c.value for c in Channel)})",
                )
            )
        try:
            spend = Decimal(row["spend"])
            if not spend.is_finite() or spend < 0:
                raise InvalidOperation
            if spend != spend.quantize(CENT):
                problems.append(
                    Problem(number, "spend", f"{row['spend']!r} has more than 2 decimals")
                )
        except InvalidOperation:
            problems.append(
                Problem(number, "spend", f"{row['spend']!r} is not a non-negative amount")
            )
        currency = row["currency"].upper()
        if len(currency) != 3 or not currency.isalpha():
            problems.append(
                Problem(number, "currency", f"{row['currency']!r} is not an ISO 4217 code")
            )
        if len(problems) == before and channel is not None:
            key = (day, channel, row["source"].lower(), row["campaign"], currency)
            totals[key] += spend.quantize(CENT)
    rows = [
        SpendRow(d, ch, src, camp, cur, amount)
        for (d, ch, src, camp, cur), amount in sorted(totals.items())
    ]
    return rows, problems


def import_spend(rows: list[SpendRow], settings: ClickHouseSettings) -> int:
    """Insert ``rows`` with a new version, so they replace earlier imports of the same keys.

    Importing the same file twice is harmless: the newer identical rows replace the older.
    """
    version = time.time_ns()
    client = get_client(settings)
    try:
        client.insert(
            "ad_spend",
            [(r.day, r.channel, r.source, r.campaign, r.currency, r.spend, version) for r in rows],
            column_names=[
                "date",
                "channel",
                "source",
                "campaign",
                "currency",
                "spend",
                "imported_version",
            ],
        )
    finally:
        client.close()
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    """`closedloop ad-spend import FILE.csv`: all rows or none; every bad line is named."""
    parser = argparse.ArgumentParser(prog="closedloop ad-spend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import a CSV: date,channel,source,campaign,spend,currency")
    imp.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        data = args.file.read_bytes()
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ad-spend: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    rows, problems = parse_spend(text.splitlines())
    if problems:
        for problem in problems:
            print(f"ad-spend: {args.file}: {problem}", file=sys.stderr)
        print(f"ad-spend: nothing imported ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    if not rows:
        print(f"ad-spend: {args.file} has no rows", file=sys.stderr)
        return 1
    settings = ClickHouseSettings()
    try:
        count = import_spend(rows, settings)
    except Exception as exc:  # noqa: BLE001 - a CLI prints the reason, not a traceback
        print(
            f"ad-spend: import into ClickHouse {settings.host}:{settings.port} failed: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"imported {count} ad spend row(s) from {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
