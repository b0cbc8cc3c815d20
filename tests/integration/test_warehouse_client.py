"""clickhouse-connect, sync and async, against the embedded warehouse over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, StreamFailureError
from pydantic import SecretStr

from services.common.clickhouse import get_async_client, get_client
from services.common.settings import ClickHouseSettings

TYPES_TABLE = """
CREATE TABLE typed (
    id UInt32,
    at DateTime64(3, 'UTC'),
    at_paris DateTime64(6, 'Europe/Paris'),
    amount Decimal(18, 2),
    big Decimal(38, 10),
    channel LowCardinality(String),
    note Nullable(String),
    maybe_amount Nullable(Decimal(18, 2)),
    tags Array(String),
    weights Array(Float64),
    props Map(String, String),
    lead UUID,
    lc_null LowCardinality(Nullable(String))
) ENGINE = MergeTree ORDER BY id
"""


def _typed_rows() -> list[list[object]]:
    paris = ZoneInfo("Europe/Paris")
    return [
        [
            1,
            datetime(2024, 3, 31, 0, 59, 59, 123000, tzinfo=UTC),
            datetime(2024, 3, 31, 3, 30, 0, 654321, tzinfo=paris),
            Decimal("12500.00"),
            Decimal("1234567890.0123456789"),
            "Paid Search",
            None,
            None,
            ["a", "b,c", ""],
            [0.5, 0.25],
            {"utm_source": "google", "empty": ""},
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            None,
        ],
        [
            2,
            datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
            datetime(2024, 10, 27, 2, 30, 0, tzinfo=paris),
            Decimal("-0.01"),
            Decimal("0E-10"),
            "Direct",
            "ünïcødé 'quoted' \t tab",
            Decimal("99.99"),
            [],
            [],
            {},
            uuid.uuid4(),
            "x",
        ],
    ]


def test_every_column_type_round_trips(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings)
    client.command(TYPES_TABLE)
    rows = _typed_rows()
    client.insert("typed", rows)
    back = client.query("SELECT * FROM typed ORDER BY id", tz_mode="aware").result_rows
    assert len(back) == len(rows)
    for got, sent in zip(back, rows, strict=True):
        assert got[0] == sent[0]
        assert got[1] == sent[1]
        assert got[2] == sent[2]
        assert got[2].utcoffset() == sent[2].utcoffset()  # type: ignore[attr-defined]
        assert list(got[3:]) == sent[3:]
    types = dict(
        client.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'typed'"
        ).result_rows
    )
    assert types["channel"] == "LowCardinality(String)"
    assert types["at_paris"] == "DateTime64(6, 'Europe/Paris')"


def test_million_rows_with_compression_read_back_by_aggregate(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    client = get_client(clickhouse_settings, compress="lz4")
    client.command(
        "CREATE TABLE facts (id UInt64, channel LowCardinality(String), amount Decimal(18, 2)) "
        "ENGINE = MergeTree ORDER BY id"
    )
    n = 1_000_000
    channels = ["Paid Search", "Organic Search", "Email", "Direct"]
    columns = [
        list(range(n)),
        [channels[i % 4] for i in range(n)],
        [Decimal(i % 1000) / 100 for i in range(n)],
    ]
    summary = client.insert(
        "facts", columns, column_names=["id", "channel", "amount"], column_oriented=True
    )
    assert summary.written_rows == n
    count, total, distinct, top = client.query(
        "SELECT count(), sum(amount), uniqExact(channel), max(id) FROM facts"
    ).result_rows[0]
    assert count == n
    assert total == Decimal(sum(i % 1000 for i in range(n))) / 100
    assert distinct == 4
    assert top == n - 1
    by_channel = dict(
        client.query("SELECT channel, count() FROM facts GROUP BY channel").result_rows
    )
    assert by_channel == dict.fromkeys(channels, n // 4)


@pytest.mark.parametrize("compression", ["lz4", "zstd", "gzip", False])
def test_each_request_compression_and_compressed_answers(
    clickhouse_settings: ClickHouseSettings, compression: str | bool
) -> None:
    client = get_client(clickhouse_settings, compress=compression)
    client.command(
        "CREATE TABLE IF NOT EXISTS squares (n UInt32, sq UInt64) ENGINE = MergeTree ORDER BY n"
    )
    client.command("TRUNCATE TABLE squares")
    # Small blocks make clickhouse-connect send many compression frames in one chunked body.
    n = 50_000
    client.insert(
        "squares",
        [list(range(n)), [i * i for i in range(n)]],
        column_names=["n", "sq"],
        column_oriented=True,
        settings={"max_insert_block_size": 1000},
    )
    result = client.query("SELECT n, sq FROM squares ORDER BY n")
    assert result.result_columns[1] == [i * i for i in range(n)]


def test_query_df_and_query_arrow(clickhouse_settings: ClickHouseSettings) -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    client = get_client(clickhouse_settings)
    frame = client.query_df("SELECT number AS n, toString(number) AS s FROM numbers(5)")
    assert list(frame["n"]) == [0, 1, 2, 3, 4]
    assert list(frame["s"]) == ["0", "1", "2", "3", "4"]
    table = client.query_arrow("SELECT number * 2 AS d FROM numbers(3)")
    assert table.column("d").to_pylist() == [0, 2, 4]


def test_settings_as_url_parameters_apply_to_one_query_only(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    client = get_client(clickhouse_settings)
    assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 3}) == 3
    assert client.command("SELECT getSetting('max_threads')") != 3
    with pytest.raises(DatabaseError) as caught:
        client.query(
            "SELECT number FROM numbers(100)",
            settings={"max_result_rows": 10, "result_overflow_mode": "throw"},
        )
    assert "Code: 396" in str(caught.value)


def test_session_keeps_set_and_temporary_tables(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings, session_id=f"s-{uuid.uuid4()}")
    client.command("SET max_threads = 2")
    client.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
    client.command("INSERT INTO scratch VALUES (7)")
    assert client.command("SELECT sum(x) FROM scratch") == 7
    assert client.command("SELECT getSetting('max_threads')") == 2
    other = get_client(clickhouse_settings, session_id=f"s-{uuid.uuid4()}")
    with pytest.raises(DatabaseError):
        other.command("SELECT sum(x) FROM scratch")


def test_session_check_of_unknown_session_fails(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings, autogenerate_session_id=False)
    with pytest.raises(DatabaseError) as caught:
        client.command("SELECT 1", settings={"session_id": f"s-{uuid.uuid4()}", "session_check": 1})
    assert caught.value.code == 372  # type: ignore[attr-defined]


def test_query_id_and_database(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings)
    result = client.query("SELECT currentDatabase()", settings={"query_id": "my-query-42"})
    assert result.result_rows == [(clickhouse_settings.database,)]
    assert result.summary["query_id"] == "my-query-42"


def test_async_client(clickhouse_settings: ClickHouseSettings) -> None:
    async def scenario() -> tuple[int, int]:
        client = await get_async_client(clickhouse_settings)
        try:
            await client.command(
                "CREATE TABLE events_async (id UInt32) ENGINE = MergeTree ORDER BY id"
            )
            await client.insert("events_async", [[i] for i in range(1000)], column_names=["id"])
            results = await asyncio.gather(
                *(client.query("SELECT count(), sum(id) FROM events_async") for _ in range(5))
            )
            return results[-1].result_rows[0]
        finally:
            await client.close()

    assert asyncio.run(scenario()) == (1000, 499500)


def test_errors_through_clickhouse_connect(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings)
    cases = [
        ("SELEC 1", 62, "Syntax error"),
        ("SELECT * FROM no_such_table", 60, "no_such_table"),
    ]
    for sql, code, text in cases:
        with pytest.raises(DatabaseError) as caught:
            client.query(sql)
        assert caught.value.code == code  # type: ignore[attr-defined]
        assert f"Code: {code}. DB::Exception:" in str(caught.value)
        assert text in str(caught.value)
    wrong = clickhouse_settings.model_copy(update={"password": SecretStr("not-the-password")})
    with pytest.raises(DatabaseError) as caught:
        get_client(wrong)
    assert caught.value.code == 516  # type: ignore[attr-defined]
    assert "Authentication failed" in str(caught.value)


def test_read_only_user_reads_but_cannot_write_or_lift_readonly(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    writer = get_client(clickhouse_settings)
    writer.command("CREATE TABLE ro_target (x UInt8) ENGINE = MergeTree ORDER BY x")
    writer.command("INSERT INTO ro_target VALUES (1)")
    reader = get_client(clickhouse_settings, readonly=True)
    assert reader.command("SELECT count() FROM ro_target") == 1
    attempts = [
        lambda: reader.command("INSERT INTO ro_target VALUES (2)"),
        lambda: reader.insert("ro_target", [[3]], column_names=["x"]),
        lambda: reader.command("DROP TABLE ro_target"),
        lambda: reader.command("CREATE TABLE sneaky (x UInt8) ENGINE = Memory"),
    ]
    # (SET readonly = 0, in SQL or as a URL parameter, is refused by clickhouse-connect itself, as
    # against a real server, since system.settings marks it read-only here; the curl tests send it.)
    for attempt in attempts:
        with pytest.raises(DatabaseError) as caught:
            attempt()
        assert caught.value.code == 164, str(caught.value)  # type: ignore[attr-defined]
        assert "readonly" in str(caught.value)
    assert writer.command("SELECT count() FROM ro_target") == 1


def test_insert_deduplication_token_makes_a_retried_insert_count_once(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    client = get_client(clickhouse_settings)
    client.command(
        "CREATE TABLE dedup (id UInt32, v String) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    rows = [[i, f"v{i}"] for i in range(100)]
    for _ in range(3):
        client.insert("dedup", rows, settings={"insert_deduplication_token": "batch-1"})
    client.insert("dedup", rows, settings={"insert_deduplication_token": "batch-2"})
    assert client.command("SELECT count() FROM dedup") == 200


def test_session_settings_url_overlay_and_own_set_stay_apart(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    client = get_client(clickhouse_settings, session_id=f"s-{uuid.uuid4()}")

    def threads(**settings: object) -> object:
        return client.command("SELECT getSetting('max_threads')", settings=settings or None)

    base = threads()
    assert threads(max_threads=3) == 3
    assert threads() == base
    assert threads(max_threads=3) == 3
    client.command("SET max_threads = 2", settings={"max_threads": 3})
    assert threads() == 2
    assert threads(max_threads=5) == 5
    assert threads() == 2
    client.command("SET max_block_size = 1234")
    assert threads(max_threads=4) == 4
    assert client.command("SELECT getSetting('max_block_size')") == 1234
    assert threads() == 2
    client.command("USE system")
    assert client.command("SELECT currentDatabase()") == clickhouse_settings.database


@pytest.mark.parametrize("compression", ["lz4", "zstd", "gzip", False])
def test_streamed_answers_arrive_whole_in_every_compression(
    clickhouse_settings: ClickHouseSettings, compression: str | bool
) -> None:
    client = get_client(clickhouse_settings, compress=compression)
    n = 1_500_000
    total = count = 0
    with client.query_column_block_stream(
        "SELECT number, toString(number) AS s FROM numbers(%(n)s)", parameters={"n": n}
    ) as stream:
        for block in stream:
            count += len(block[0])
            total += sum(block[0])
            assert block[1][-1] == str(block[0][-1])
    assert (count, total) == (n, n * (n - 1) // 2)


def test_error_in_the_middle_of_a_stream_is_raised(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings)
    blocks = 0
    with pytest.raises(StreamFailureError) as caught:
        stream = client.query_row_block_stream(
            "SELECT throwIf(number = 900000, 'boom in the middle') FROM numbers(2000000) "
            "SETTINGS max_block_size = 10000"
        )
        with stream:
            for _ in stream:
                blocks += 1
    assert blocks > 0, "the error came before any block: nothing was streamed"
    assert "boom in the middle" in str(caught.value)
