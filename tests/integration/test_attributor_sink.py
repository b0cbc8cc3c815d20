"""The ClickHouse sink on the embedded warehouse: idempotent retries, bad rows skipped, state read back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from services.attributor.adapters.clickhouse import (
    TABLES,
    TOUCHPOINT_COLUMNS,
    ClickHouseSink,
    StateStore,
    touch_row,
)
from services.attributor.journeys import Touch
from services.common.clickhouse import get_client
from services.common.errors import UnavailableError
from services.common.settings import ClickHouseSettings
from tests.unit.test_attributor_journeys import stage, touch


@pytest.fixture
def client(clickhouse_settings: ClickHouseSettings) -> Iterator[Any]:
    made = get_client(clickhouse_settings)
    yield made
    made.close()


def count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def test_a_retried_batch_is_dropped_by_its_deduplication_token(client: Any) -> None:
    client.command("SYSTEM STOP MERGES touchpoints")  # count parts' rows, not merged ones
    sink = ClickHouseSink(client)
    sink.add_touch(touch("t1", 0, offset=1))
    sink.add_stage_event(stage("e1", "proposal", 50, 3))
    # The first attempt reached ClickHouse but the flush "failed" after it: same token again.
    sink._insert("touchpoints", *_args(sink, "touchpoints"))
    sink._done.clear()
    assert sink.flush() == 2
    assert count(client, "touchpoints") == 1  # raw rows, no FINAL: the retry was dropped
    assert count(client, "deal_stage_history") == 1
    # Control: the same row under another token is a new insert (so the check above can fail).
    columns, rows, _ = _args_of(touch("t1", 0, offset=1))
    sink._insert("touchpoints", columns, rows, "another-token")
    assert count(client, "touchpoints") == 2


def _args(sink: ClickHouseSink, table: str) -> tuple[Any, ...]:
    columns = dict(TABLES)[table]
    return columns, sink._rows[table], f"attributor-{sink._batch_id}-{table}"


def _args_of(t: Touch) -> tuple[Any, ...]:
    return TOUCHPOINT_COLUMNS, [touch_row(t)], ""


def test_one_bad_row_is_skipped_and_the_rest_written(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ClickHouseSink(client)
    sink.add_touch(touch("t1", 0, offset=1))
    sink.add_touch(replace(touch("t2", 1, offset=2), occurred_at="not a time"))  # type: ignore[arg-type]
    sink.add_touch(touch("t3", 2, offset=3))
    assert sink.flush() == 2
    assert sorted(
        r[0] for r in client.query("SELECT touchpoint_id FROM touchpoints").result_rows
    ) == [
        "t1",
        "t3",
    ]
    assert "row rejected by ClickHouse, skipped" in caplog.text


def test_a_batch_whose_every_row_is_rejected_fails_the_flush_and_is_kept(client: Any) -> None:
    sink = ClickHouseSink(client)
    sink.add_touch(replace(touch("t1", 0, offset=1), occurred_at="bad"))  # type: ignore[arg-type]
    with pytest.raises(UnavailableError):
        sink.flush()
    assert sink.buffered == 1


def test_state_reads_back_what_the_sink_wrote(client: Any) -> None:
    sink = ClickHouseSink(client)
    sink.add_touch(touch("t1", 0, offset=1))
    sink.add_touch(touch("t1", 0, offset=5, retracted=True))
    sink.add_touch(replace(touch("t9", 0, offset=2), partition=4))
    sink.add_stage_event(stage("e1", "proposal", 50, 3))
    sink.add_stage_event(stage("e1", "proposal", 50, 3))
    sink.flush()
    store = StateStore(client)
    touches = store.touches({0})
    assert [(t.touchpoint_id, t.retracted, t.offset) for t in touches] == [("t1", True, 5)]
    assert touches[0].occurred_at == touch("t1", 0).occurred_at
    events = store.stage_events({0, 1})
    assert [(e.event_id, e.amount) for e in events] == [("e1", stage("e1", "x", 0, 0).amount)]
    assert store.max_version() == 0
