"""ClickHouse output of the attributor: the batching sink, state restore, Markov paths."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from services.attributor.journeys import (
    Attribution,
    CreditFact,
    DealFact,
    IdentityLinkFact,
    LeadFact,
    RunFact,
    StageEvent,
    Touch,
    channel_name,
)
from services.common.clickhouse import get_client
from services.common.errors import UnavailableError
from services.common.settings import ClickHouseSettings
from services.warehouse.migrations import MigrationError, apply_migrations

log = logging.getLogger(__name__)

TOUCHPOINT_COLUMNS = (
    "lead_id", "touchpoint_id", "anonymous_id", "site_id", "occurred_at", "channel",
    "channel_symbol", "source", "medium", "campaign", "term", "content", "click_ids",
    "referrer_host", "landing_page", "is_offline", "retracted", "kafka_partition", "kafka_offset",
)  # fmt: skip
STAGE_COLUMNS = (
    "lead_id", "deal_id", "event_id", "crm", "pipeline", "stage", "stage_order", "crm_stage",
    "amount", "currency", "is_won", "is_lost", "occurred_at", "received_at", "deal_name",
    "kafka_partition", "kafka_offset",
)  # fmt: skip
LINK_COLUMNS = (
    "anonymous_id", "lead_id", "valid_from", "identified_by", "link_count", "shared", "site_id",
)  # fmt: skip
CREDIT_COLUMNS = CreditFact._fields
RUN_COLUMNS = tuple(f.name for f in fields(RunFact))
LEAD_COLUMNS = tuple(f.name for f in fields(LeadFact))
DEAL_COLUMNS = tuple(f.name for f in fields(DealFact))

# Insert order: the inputs, then the derived facts, attribution_runs last, because the
# newest run is what makes a computation's credits count.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("touchpoints", TOUCHPOINT_COLUMNS),
    ("identity_links", LINK_COLUMNS),
    ("deal_stage_history", STAGE_COLUMNS),
    ("deals", DEAL_COLUMNS),
    ("leads", LEAD_COLUMNS),
    ("attribution_credits", CREDIT_COLUMNS),
    ("attribution_runs", RUN_COLUMNS),
)


def connect(settings: ClickHouseSettings, migrate: bool = False) -> Client:
    """A writer client on the configured database; ``migrate`` applies schemas/clickhouse first.

    Raises UnavailableError when ClickHouse does not answer.
    """
    try:
        if migrate:
            bootstrap = get_client(settings, database="")
            try:
                apply_migrations(bootstrap, settings.database)
            finally:
                bootstrap.close()
        return get_client(settings)
    except (ClickHouseError, OSError, MigrationError) as exc:
        raise UnavailableError(
            f"ClickHouse at {settings.host}:{settings.port} not usable: {exc}"
        ) from exc


def touch_row(touch: Touch) -> tuple[Any, ...]:
    """A touchpoints row."""
    return (
        touch.lead_id, touch.touchpoint_id, touch.anonymous_id, touch.site_id, touch.occurred_at,
        channel_name(touch.channel), touch.channel, touch.source, touch.medium, touch.campaign,
        touch.term, touch.content, dict(touch.click_ids), touch.referrer_host, touch.landing_page,
        touch.is_offline, touch.retracted, touch.partition, touch.offset,
    )  # fmt: skip


def stage_row(event: StageEvent) -> tuple[Any, ...]:
    """A deal_stage_history row."""
    return (
        event.lead_id, event.deal_id, event.event_id, event.crm, event.pipeline, event.stage,
        event.stage_order, event.crm_stage, event.amount, event.currency, event.is_won,
        event.is_lost, event.occurred_at, event.received_at, event.deal_name, event.partition,
        event.offset,
    )  # fmt: skip


def link_row(link: IdentityLinkFact) -> tuple[Any, ...]:
    """An identity_links row."""
    return (
        link.anonymous_id, link.lead_id, link.valid_from, link.identified_by, link.link_count,
        link.shared, link.site_id,
    )  # fmt: skip


def _fact_row(fact: Any) -> tuple[Any, ...]:
    # vars() keeps declaration order and, unlike dataclasses.astuple, copies nothing.
    return tuple(vars(fact).values())


class Sink(Protocol):
    """Where the worker's facts go: ``add*`` buffers, ``flush`` is the only I/O."""

    def add_touch(self, touch: Touch) -> None: ...
    def add_stage_event(self, event: StageEvent) -> None: ...
    def add_link(self, link: IdentityLinkFact) -> None: ...
    def add_attribution(self, attribution: Attribution) -> None: ...
    def flush(self) -> int: ...
    @property
    def buffered(self) -> int: ...


class ClickHouseSink:
    """Buffers rows per table; ``flush()`` inserts them, one insert per table, idempotently.

    Each batch carries an ``insert_deduplication_token`` per table that stays the same
    when a failed flush is retried, so an insert that reached ClickHouse before the error
    is dropped the second time (the tables set ``non_replicated_deduplication_window``).
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name, _ in TABLES}
        self._batch_id = uuid.uuid4().hex
        self._done: set[str] = set()

    @property
    def buffered(self) -> int:
        """Rows waiting for the next flush."""
        return sum(len(rows) for rows in self._rows.values())

    def add_touch(self, touch: Touch) -> None:
        self._rows["touchpoints"].append(touch_row(touch))

    def add_stage_event(self, event: StageEvent) -> None:
        self._rows["deal_stage_history"].append(stage_row(event))

    def add_link(self, link: IdentityLinkFact) -> None:
        self._rows["identity_links"].append(link_row(link))

    def add_attribution(self, attribution: Attribution) -> None:
        self._rows["attribution_credits"].extend(attribution.credits)
        self._rows["attribution_runs"].extend(_fact_row(r) for r in attribution.runs)
        self._rows["deals"].extend(_fact_row(d) for d in attribution.deals)
        if attribution.lead is not None:
            self._rows["leads"].append(_fact_row(attribution.lead))

    def flush(self) -> int:
        """Insert every buffered row; returns how many. Raises UnavailableError and keeps the rows.

        When ClickHouse (or the row encoder) rejects a table's batch itself rather than
        the connection failing, the rows are inserted one by one and the ones rejected
        are logged and skipped, so one bad row never stops ingestion. If every row is
        rejected the problem is not the rows (a schema mismatch, say): the flush fails.
        """
        written = 0
        for table, columns in TABLES:
            rows = self._rows[table]
            if not rows or table in self._done:
                continue
            token = f"attributor-{self._batch_id}-{table}"
            try:
                self._insert(table, columns, rows, token)
                written += len(rows)
            except _REJECTED as exc:
                written += self._insert_one_by_one(table, columns, rows, token, exc)
            self._done.add(table)
        self._rows = {name: [] for name, _ in TABLES}
        self._done = set()
        self._batch_id = uuid.uuid4().hex
        return written

    def _insert(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], token: str
    ) -> None:
        try:
            self._client.insert(
                table,
                rows,
                column_names=list(columns),
                settings={"insert_deduplication_token": token},
            )
        except (OperationalError, OSError) as exc:
            raise UnavailableError(f"insert into {table} failed: {exc}") from exc

    def _insert_one_by_one(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
        token: str,
        batch_error: Exception,
    ) -> int:
        written = 0
        rejected: list[tuple[int, Exception]] = []
        for index, row in enumerate(rows):
            try:
                self._insert(table, columns, [row], f"{token}-{index}")
                written += 1
            except _REJECTED as exc:
                rejected.append((index, exc))
        if not written:
            raise UnavailableError(
                f"insert into {table} rejected for every row: {batch_error}"
            ) from batch_error
        for index, problem in rejected:
            log.error(
                "row rejected by ClickHouse, skipped",
                extra={
                    "table": table,
                    "row": repr(rows[index])[:2000],
                    "error": str(problem)[:500],
                },
            )
        return written


# A batch ClickHouse or the encoder refused (not a connection problem).
_REJECTED = (ClickHouseError, TypeError, ValueError, OverflowError, AttributeError)


class ListSink:
    """A sink that keeps what was flushed in lists (tests, the bench's pure path)."""

    def __init__(self) -> None:
        self.touches: list[Touch] = []
        self.stage_events: list[StageEvent] = []
        self.links: list[IdentityLinkFact] = []
        self.attributions: list[Attribution] = []
        self._pending: list[tuple[str, Any]] = []
        self.flushes = 0

    @property
    def buffered(self) -> int:
        return len(self._pending)

    def add_touch(self, touch: Touch) -> None:
        self._pending.append(("touch", touch))

    def add_stage_event(self, event: StageEvent) -> None:
        self._pending.append(("stage", event))

    def add_link(self, link: IdentityLinkFact) -> None:
        self._pending.append(("link", link))

    def add_attribution(self, attribution: Attribution) -> None:
        self._pending.append(("attribution", attribution))

    def flush(self) -> int:
        targets: dict[str, list[Any]] = {
            "touch": self.touches,
            "stage": self.stage_events,
            "link": self.links,
            "attribution": self.attributions,
        }
        for kind, item in self._pending:
            targets[kind].append(item)
        written, self._pending = len(self._pending), []
        self.flushes += 1
        return written


# --------------------------------------------------------------------------- restore


class StateStore:
    """Reads back what the sink wrote: the worker's state is its own output."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def max_version(self) -> int:
        """The newest computed_version written (0 when none)."""
        result = self._client.query("SELECT max(computed_version) FROM attribution_runs")
        return int(result.result_rows[0][0] or 0)

    def touches(self, partitions: Iterable[int]) -> list[Touch]:
        """Every touchpoint (newest copy, retracted ones included) of the lead partitions."""
        parts = sorted(partitions)
        if not parts:
            return []
        result = self._client.query(
            f"SELECT {', '.join(TOUCHPOINT_COLUMNS)} FROM touchpoints FINAL "
            "WHERE kafka_partition IN {parts:Array(UInt32)}",
            parameters={"parts": parts},
        )
        return [
            Touch(
                touchpoint_id=r[1],
                lead_id=r[0],
                anonymous_id=r[2],
                site_id=r[3],
                occurred_at=_aware(r[4]),
                channel=r[6],
                source=r[7],
                medium=r[8],
                campaign=r[9],
                term=r[10],
                content=r[11],
                click_ids=dict(r[12]),
                referrer_host=r[13],
                landing_page=r[14],
                is_offline=bool(r[15]),
                retracted=bool(r[16]),
                partition=int(r[17]),
                offset=int(r[18]),
            )  # fmt: skip
            for r in result.result_rows
        ]

    def stage_events(self, partitions: Iterable[int]) -> list[StageEvent]:
        """Every deal-stage event of the lead partitions."""
        parts = sorted(partitions)
        if not parts:
            return []
        result = self._client.query(
            f"SELECT {', '.join(STAGE_COLUMNS)} FROM deal_stage_history FINAL "
            "WHERE kafka_partition IN {parts:Array(UInt32)}",
            parameters={"parts": parts},
        )
        return [
            StageEvent(
                lead_id=r[0],
                deal_id=r[1],
                event_id=r[2],
                crm=r[3],
                pipeline=r[4],
                stage=r[5],
                stage_order=int(r[6]),
                crm_stage=r[7],
                amount=r[8],
                currency=r[9],
                is_won=bool(r[10]),
                is_lost=bool(r[11]),
                occurred_at=_aware(r[12]),
                received_at=_aware(r[13]),
                deal_name=r[14],
                partition=int(r[15]),
                offset=int(r[16]),
            )  # fmt: skip
            for r in result.result_rows
        ]

    def lead_creations(self, partitions: Iterable[int]) -> list[tuple[str, int, datetime | None]]:
        """(lead_id, partition, created_at the last attribution used) of the lead partitions."""
        parts = sorted(partitions)
        if not parts:
            return []
        result = self._client.query(
            "SELECT lead_id, kafka_partition, created_at FROM leads FINAL "
            "WHERE kafka_partition IN {parts:Array(UInt32)}",
            parameters={"parts": parts},
        )
        return [
            (r[0], int(r[1]), None if r[2] is None else _aware(r[2])) for r in result.result_rows
        ]

    def channel_paths(self) -> list[tuple[Sequence[str], bool]]:
        """Every lead's channel path (Avro symbols, journey order) and whether a deal was won."""
        result = self._client.query(
            "SELECT arrayMap(x -> x.3, arraySort(groupArray((t.occurred_at, t.touchpoint_id, "
            "t.channel_symbol)))) AS path, max(w.lead_id != '') AS converted "
            "FROM (SELECT lead_id, touchpoint_id, occurred_at, channel_symbol FROM touchpoints "
            "FINAL WHERE NOT retracted) AS t "
            "LEFT JOIN (SELECT DISTINCT lead_id FROM deals FINAL WHERE status = 'won') AS w "
            "ON w.lead_id = t.lead_id GROUP BY t.lead_id"
        )
        return [(list(r[0]), bool(r[1])) for r in result.result_rows]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
