"""`closedloop crm-backfill`: historical deals from a CRM's CSV export into crm.deal_stages."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from schemas.topics import CRM_DEAL_STAGES
from services.common.avro import AvroCodec
from services.common.errors import ClosedloopError, UnavailableError
from services.common.kafka import KafkaPublisher
from services.crm_ingest.crms.base import (
    DealChange,
    amount,
    currency,
    flag,
    required_text,
    text,
    timestamp,
)
from services.crm_ingest.deals import deal_stage_changed
from services.crm_ingest.dedupe import DedupeStore
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.settings import CrmIngestSettings
from services.crm_ingest.stages import StageMap

FIELDS = (
    "event_id",
    "deal_id",
    "email",
    "pipeline",
    "stage",
    "amount",
    "currency",
    "occurred_at",
    "deal_name",
    "is_won",
    "is_lost",
    "status",
    "closed",
)

# Column of each field in each CRM's standard deals export (override with --column).
DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "hubspot": {
        "deal_id": "Record ID",
        "deal_name": "Deal Name",
        "stage": "Deal Stage",
        "pipeline": "Pipeline",
        "amount": "Amount",
        "currency": "Currency",
        "occurred_at": "Last Modified Date",
        "email": "Contact Email",
    },
    "salesforce": {
        "deal_id": "Opportunity ID",
        "deal_name": "Opportunity Name",
        "stage": "Stage",
        "amount": "Amount",
        "currency": "Opportunity Currency",
        "occurred_at": "Last Modified Date",
        "email": "Contact Email",
        "is_won": "Won",
        "closed": "Closed",
    },
    "pipedrive": {
        "deal_id": "Deal - ID",
        "deal_name": "Deal - Title",
        "stage": "Deal - Stage",
        "pipeline": "Deal - Pipeline",
        "amount": "Deal - Value",
        "currency": "Deal - Currency",
        "status": "Deal - Status",
        "occurred_at": "Deal - Update time",
        "email": "Person - Email",
    },
    "generic": {name: name for name in FIELDS if name not in {"status", "closed"}},
}


@dataclass(frozen=True)
class RowResult:
    """One CSV row: its line number and its change, or the problem that makes it unusable."""

    line: int
    change: DealChange | None = None
    error: PayloadError | None = None


def read_rows(
    stream: TextIO, crm: str, columns: Mapping[str, str], date_format: str | None = None
) -> Iterator[RowResult]:
    """Each data row of a CSV export as a DealChange, with the line it starts on."""
    reader = csv.DictReader(stream)
    headers = set(reader.fieldnames or [])
    for required in ("deal_id", "stage", "occurred_at", "email"):
        column = columns.get(required)
        if column is None or column not in headers:
            raise PayloadError(
                required,
                f"column {column!r} is not in the CSV header; map it with --column "
                f"{required}=<header>",
                "missing_column",
            )
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        try:
            yield RowResult(start, change=_change(crm, row, columns, date_format))
        except PayloadError as exc:
            yield RowResult(start, error=exc)


def _change(
    crm: str, row: Mapping[str, Any], columns: Mapping[str, str], date_format: str | None
) -> DealChange:
    def value(name: str) -> Any:
        column = columns.get(name)
        raw = row.get(column) if column else None
        return raw.strip() if isinstance(raw, str) else raw

    def field(name: str) -> str:
        return columns.get(name, name)

    deal_id = required_text(value("deal_id"), field("deal_id"))
    stage = required_text(value("stage"), field("stage"))
    occurred_at = _time(value("occurred_at"), field("occurred_at"), date_format)
    money = amount(value("amount"), field("amount"))
    status = (text(value("status"), field("status"), required=False) or "").lower()
    closed = flag(value("closed"), field("closed"))
    won = flag(value("is_won"), field("is_won"))
    lost = flag(value("is_lost"), field("is_lost"))
    if closed is not None:
        won, lost = bool(closed and won), bool(closed and not won)
    if status:
        won, lost = status == "won", status == "lost"
    event = text(value("event_id"), field("event_id"), required=False)
    if event is None:
        event = f"backfill:{deal_id}:{stage}:{int(occurred_at.timestamp() * 1000)}"
    return DealChange(
        index=0,
        event_id=f"{crm}:{event}",
        deal_id=deal_id,
        occurred_at=occurred_at,
        crm_stage=stage,
        pipeline=text(value("pipeline"), field("pipeline"), required=False),
        email=required_text(value("email"), field("email")),
        amount=money,
        currency=currency(value("currency"), field("currency")),
        is_won=won,
        is_lost=lost,
        deal_name=text(value("deal_name"), field("deal_name"), required=False),
    )


def _time(value: Any, field_name: str, date_format: str | None) -> datetime:
    if date_format and isinstance(value, str) and value:
        try:
            parsed = datetime.strptime(value, date_format)
        except ValueError as exc:
            raise PayloadError(field_name, f"does not match --date-format {date_format}") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return timestamp(value, field_name)


def _columns(crm: str, overrides: Sequence[str]) -> dict[str, str]:
    columns = dict(DEFAULT_COLUMNS[crm])
    for item in overrides:
        name, sep, header = item.partition("=")
        if not sep or name not in FIELDS:
            raise SystemExit(
                f"crm-backfill: --column takes <field>=<CSV header>, field one of {', '.join(FIELDS)}"
            )
        columns[name] = header
    return columns


def _count_lines(path: Path) -> int:
    with path.open("rb") as stream:
        return max(sum(1 for _ in stream) - 1, 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="closedloop crm-backfill",
        description="Import historical deals from a CRM's CSV export into crm.deal_stages, "
        "with their original timestamps. Kafka, identity and stage mapping come from the "
        "same environment as the crm_ingest service.",
    )
    parser.add_argument("crm", choices=sorted(DEFAULT_COLUMNS), help="which CRM exported the file")
    parser.add_argument("csv", type=Path, help="the CSV export (UTF-8, header row first)")
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=HEADER",
        help="the CSV header of a field (repeatable); defaults per CRM in the README",
    )
    parser.add_argument(
        "--date-format",
        help="strptime format of the time column when not ISO-8601/epoch ms (taken as UTC)",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="events per publish batch")
    parser.add_argument("--dry-run", action="store_true", help="check every row, publish nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the backfill; 0 when every row was published, 1 when some rows were rejected,
    2 when the file, the settings or the broker stopped it."""
    args = _parser().parse_args(argv)
    try:
        return _run(args, CrmIngestSettings())
    except (ClosedloopError, OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"crm-backfill: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: CrmIngestSettings) -> int:
    columns = _columns(args.crm, args.column)
    stages = StageMap.build(settings.stage_map, settings.custom_stages, settings.stage_map_file)
    codec = AvroCodec.for_topic(CRM_DEAL_STAGES.name)
    topic = settings.kafka.topic(CRM_DEAL_STAGES.name)
    total = _count_lines(args.csv)
    received_at = datetime.now(UTC)
    publisher = None if args.dry_run else KafkaPublisher(settings.kafka, "closedloop-crm-backfill")
    store = DedupeStore(settings.dedupe_path, timedelta(hours=settings.dedupe_window_hours))
    published = duplicates = valid = 0
    rejected: list[tuple[int, str | None, str]] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal published, duplicates
        seen = store.delivered([r["event_id"] for r in batch], received_at)
        fresh = list({r["event_id"]: r for r in batch if r["event_id"] not in seen}.values())
        duplicates += len(batch) - len(fresh)
        batch.clear()
        if publisher is None or not fresh:
            return
        messages = [(topic, r["lead_id"], codec.encode(r)) for r in fresh]
        results = asyncio.run(publisher.publish_many(messages))
        acked = [r["event_id"] for r, error in zip(fresh, results, strict=True) if error is None]
        store.record_delivered(acked, received_at)
        published += len(acked)
        if len(acked) != len(fresh):
            raise UnavailableError(
                f"broker did not acknowledge {len(fresh) - len(acked)} event(s); "
                f"{published} published so far (re-running skips them)"
            )

    try:
        with (
            args.csv.open(newline="", encoding="utf-8-sig") as stream,
            tqdm(
                total=total, unit="row", desc="crm-backfill", disable=args.quiet, file=sys.stderr
            ) as progress,
        ):
            for row in read_rows(stream, args.crm, columns, args.date_format):
                progress.update(1)
                if row.error is not None:
                    rejected.append((row.line, row.error.field, row.error.problem))
                    continue
                assert row.change is not None
                try:
                    batch.append(
                        deal_stage_changed(
                            args.crm,
                            row.change,
                            stages,
                            settings.identity,
                            received_at,
                            settings.default_currency,
                        )
                    )
                except PayloadError as exc:
                    rejected.append((row.line, exc.field, exc.problem))
                    continue
                valid += 1
                if len(batch) >= args.batch_size:
                    flush()
            flush()
    finally:
        if publisher is not None:
            publisher.close()
        store.close()
    for line, field, problem in rejected:
        print(f"{args.csv}:{line}: {field or 'row'}: {problem}", file=sys.stderr)
    done = f"{valid} valid (dry run)" if args.dry_run else f"{published} published"
    print(
        f"crm-backfill: {done}, {duplicates} already delivered, "
        f"{len(rejected)} rejected of {valid + len(rejected)} rows"
    )
    return 1 if rejected else 0
