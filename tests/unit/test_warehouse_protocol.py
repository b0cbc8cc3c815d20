"""The warehouse's pure parts: HTTP parameters, credentials, insert heads, errors, codecs, migration files."""

from __future__ import annotations

import base64
import gzip
import zlib
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from services.warehouse.compression import body_decoder, encode
from services.warehouse.migrations import MigrationError, discover, split_statements
from services.warehouse.protocol import (
    ClickHouseError,
    content_type,
    credentials,
    http_status,
    insert_head,
    output_format,
    query_params,
    response_encoding,
    settings_statement,
)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (62, 400),
        (60, 404),
        (81, 404),
        (115, 404),
        (516, 403),
        (497, 403),
        (194, 401),
        (164, 500),
        (229, 413),
        (48, 501),
        (159, 408),
        (1, 500),
    ],
)
def test_status_of_each_error_code_is_clickhouses(code: int, status: int) -> None:
    assert http_status(code) == status


def test_engine_error_text_is_kept_and_code_parsed() -> None:
    error = ClickHouseError.from_engine(
        "prefix Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE)"
    )
    assert error.code == 60
    assert error.status == 404
    assert (
        error.body("26.1")
        == b"Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE) (version 26.1)\n"
    )
    assert ClickHouseError.from_engine("weird").code == 1002
    with_trailer = ClickHouseError.from_engine(
        "Code: 27. DB::Exception: x. (NAME) (version 26.1)\n"
    )
    assert with_trailer.body("26.1") == b"Code: 27. DB::Exception: x. (NAME) (version 26.1)\n"
    made = ClickHouseError.of(516, "bi: Authentication failed")
    assert (
        made.message
        == "Code: 516. DB::Exception: bi: Authentication failed. (AUTHENTICATION_FAILED)"
    )


def test_credentials_from_headers_basic_auth_and_parameters() -> None:
    basic = "Basic " + base64.b64encode(b"closedloop:p:w").decode()
    assert credentials({"authorization": basic}, {}).password == "p:w"
    by_header = credentials(
        {"x-clickhouse-user": "bi", "x-clickhouse-key": "k", "authorization": basic}, {}
    )
    assert (by_header.user, by_header.password) == ("bi", "k")
    assert credentials({}, {"user": "bi", "password": "x"}).user == "bi"
    anonymous = credentials({}, {})
    assert not anonymous.given
    with pytest.raises(ClickHouseError) as caught:
        credentials({"authorization": "Basic !!!"}, {})
    assert caught.value.code == 516


def test_query_params_split_transport_settings_and_bind() -> None:
    params = query_params(
        [
            ("query", "SELECT 1"),
            ("database", "db"),
            ("max_threads", "2"),
            ("param_x", "5"),
            ("session_id", "s"),
            ("session_timeout", "30"),
            ("enable_http_compression", "1"),
            ("wait_end_of_query", "1"),
            ("http_headers_progress_interval_ms", "10"),
        ],
        {"x-clickhouse-format": "JSON"},
    )
    assert params.settings == {"max_threads": "2"}
    assert params.bind == {"x": "5"}
    assert (params.database, params.session_id, params.session_timeout) == ("db", "s", 30)
    assert params.enable_http_compression
    assert params.default_format == "JSON"
    with pytest.raises(ClickHouseError) as caught:
        query_params([("session_timeout", "99999")], {})
    assert caught.value.code == 36
    with pytest.raises(ClickHouseError):
        query_params([("bad name", "1")], {})


@pytest.mark.parametrize(
    ("head", "statement", "fmt", "rest"),
    [
        (
            b"INSERT INTO `d`.`t` (`a`, `b`) FORMAT Native\n\x00\x01",
            "INSERT INTO `d`.`t` (`a`, `b`)",
            "Native",
            b"\x00\x01",
        ),
        (b"  insert into t format CSV\r\n1,2\n", "insert into t", "CSV", b"1,2\n"),
        (b'INSERT INTO t\nFORMAT JSONEachRow {"a":1}', "INSERT INTO t", "JSONEachRow", b'{"a":1}'),
        (
            b"INSERT INTO t SETTINGS async_insert=0 FORMAT TSV\n",
            "INSERT INTO t SETTINGS async_insert=0",
            "TSV",
            b"",
        ),
    ],
)
def test_insert_head_finds_the_statement_and_the_data(
    head: bytes, statement: str, fmt: str, rest: bytes
) -> None:
    found = insert_head(head)
    assert found is not None
    assert (found.statement, found.format, head[found.data_offset :]) == (statement, fmt, rest)


@pytest.mark.parametrize(
    "head",
    [
        b"INSERT INTO t VALUES ('FORMAT CSV\n')",
        b"INSERT INTO t SELECT * FROM s FORMAT x\n",
        b"SELECT 1 FORMAT CSV\n",
        b"INSERT INTO t VALUES (1)",
    ],
)
def test_other_statements_are_not_streamed_inserts(head: bytes) -> None:
    assert insert_head(head) is None


def test_output_format_and_content_types() -> None:
    assert output_format("SELECT 1 FORMAT JSONEachRow;  ", "TabSeparated") == "JSONEachRow"
    assert output_format("SELECT 'FORMAT' AS f", "TabSeparated") == "TabSeparated"
    assert content_type("CSVWithNames").endswith("header=present")
    assert content_type("JSONEachRow").startswith("application/x-ndjson")
    assert content_type("Native") == "application/octet-stream"
    assert content_type("Pretty").startswith("text/plain")


def test_response_encoding_follows_the_clients_order() -> None:
    available = ("lz4", "zstd", "gzip", "deflate")
    assert response_encoding("lz4,zstd,gzip,deflate", available) == "lz4"
    assert response_encoding("deflate, gzip;q=0.9, br", available) == "deflate"
    assert response_encoding("br", available) is None


def test_settings_statement_quotes_values() -> None:
    assert settings_statement({"a": "1", "b": "it's\\"}) == "SET a = '1', b = 'it\\'s\\\\'"


FRAMERS = {
    "lz4": lambda b: lz4.frame.compress(b),
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "gzip": gzip.compress,
}


@given(
    parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=5),
    cut=st.integers(min_value=1, max_value=500),
    encoding=st.sampled_from(sorted(FRAMERS)),
)
def test_bodies_of_several_frames_decode_in_any_chunking(
    parts: list[bytes], cut: int, encoding: str
) -> None:
    body = b"".join(FRAMERS[encoding](part) for part in parts)
    decoder = body_decoder(encoding)
    out = b"".join(decoder.feed(body[i : i + cut]) for i in range(0, len(body), cut))
    decoder.finish()
    assert out == b"".join(parts)


def test_truncated_or_corrupt_or_unknown_bodies_fail_clearly() -> None:
    decoder = body_decoder("lz4")
    decoder.feed(lz4.frame.compress(b"x" * 10000)[:-5])
    with pytest.raises(ClickHouseError) as caught:
        decoder.finish()
    assert caught.value.code == 271
    with pytest.raises(ClickHouseError):
        body_decoder("gzip").feed(b"definitely not gzip")
    with pytest.raises(ClickHouseError) as unknown:
        body_decoder("snappy-ish")
    assert unknown.value.code == 89
    assert body_decoder("").feed(b"raw") == b"raw"


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip", "deflate"])
def test_response_encodings_round_trip(encoding: str) -> None:
    data = b"0123456789" * 1000
    decoded = {
        "lz4": lz4.frame.decompress,
        "zstd": lambda b: zstandard.ZstdDecompressor().decompress(b),
        "gzip": gzip.decompress,
        "deflate": zlib.decompress,
    }[encoding](encode(data, encoding))
    assert decoded == data


def test_split_statements_on_line_ending_semicolons() -> None:
    text = "-- header;\nCREATE TABLE a (x String DEFAULT ';') ENGINE = Memory;\n\n-- only a comment\nCREATE VIEW v AS\nSELECT 1;\n-- trailing\n"
    assert split_statements(text) == [
        "-- header;\nCREATE TABLE a (x String DEFAULT ';') ENGINE = Memory",
        "-- only a comment\nCREATE VIEW v AS\nSELECT 1",
    ]
    assert split_statements("SELECT 1") == ["SELECT 1"]


def test_discover_orders_files_and_rejects_bad_names(tmp_path: Path) -> None:
    (tmp_path / "010_b.sql").write_text("SELECT 2;")
    (tmp_path / "002_a.sql").write_text("SELECT 1;")
    assert [(m.version, m.name) for m in discover(tmp_path)] == [(2, "a"), (10, "b")]
    (tmp_path / "10_dup.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="NNN_name"):
        discover(tmp_path)
    (tmp_path / "10_dup.sql").unlink()
    (tmp_path / "0010_dup.sql").write_text("SELECT 3;")
    with pytest.raises(MigrationError, match="also used"):
        discover(tmp_path)
