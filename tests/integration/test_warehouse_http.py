"""Plain HTTP against the embedded warehouse with curl, as BI tools and scripts use it."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from services.common.settings import ClickHouseSettings


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def curl(*args: str) -> Answer:
    """Run curl and split its answer (status, lower-cased headers, body)."""
    done = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "60", *args],
        capture_output=True,
        check=True,
    )
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):  # curl's Expect: 100-continue interim answer
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body.decode())


@pytest.fixture
def base(clickhouse_settings: ClickHouseSettings) -> str:
    return f"http://127.0.0.1:{clickhouse_settings.port}"


@pytest.fixture
def writer(clickhouse_settings: ClickHouseSettings) -> list[str]:
    password = clickhouse_settings.password.get_secret_value()
    return ["-u", f"{clickhouse_settings.username}:{password}"]


@pytest.fixture
def reader(clickhouse_settings: ClickHouseSettings) -> list[str]:
    password = clickhouse_settings.readonly_password.get_secret_value()
    return ["-u", f"{clickhouse_settings.readonly_username}:{password}"]


@pytest.fixture
def table(clickhouse_settings: ClickHouseSettings, base: str, writer: list[str]) -> str:
    """A table `visits` with two rows, in the test's database."""
    db = clickhouse_settings.database
    for sql in (
        f"CREATE TABLE {db}.visits (id UInt32, channel String) ENGINE = MergeTree ORDER BY id",
        f"INSERT INTO {db}.visits VALUES (1, 'Email'), (2, 'Direct')",
    ):
        assert curl(*writer, f"{base}/", "--data-binary", sql).status == 200
    return f"{db}.visits"


def test_ping_and_root(base: str) -> None:
    assert curl(f"{base}/ping").body == "Ok.\n"
    assert curl(f"{base}/").body == "Ok.\n"


def test_get_select_format_json_like_a_real_server(base: str) -> None:
    answer = curl(f"{base}/?query=SELECT+1+FORMAT+JSON")
    assert answer.status == 200
    document = json.loads(answer.body)
    assert document["data"] == [{"1": 1}]
    assert document["meta"] == [{"name": "1", "type": "UInt8"}]
    assert answer.headers["x-clickhouse-format"] == "JSON"
    assert answer.headers["content-type"].startswith("application/json")
    summary = json.loads(answer.headers["x-clickhouse-summary"])
    assert summary["read_rows"] == "1"
    assert answer.headers["x-clickhouse-query-id"]
    assert answer.headers["x-clickhouse-timezone"]


@pytest.mark.parametrize(
    ("format_clause", "expected", "content_type"),
    [
        (
            "FORMAT JSONEachRow",
            '{"id":1,"channel":"Email"}\n{"id":2,"channel":"Direct"}\n',
            "application/x-ndjson",
        ),
        ("FORMAT TabSeparated", "1\tEmail\n2\tDirect\n", "text/tab-separated-values"),
        ("FORMAT CSV", '1,"Email"\n2,"Direct"\n', "text/csv"),
        ("", "1\tEmail\n2\tDirect\n", "text/tab-separated-values"),
    ],
)
def test_post_query_in_body_in_each_format(
    base: str, reader: list[str], table: str, format_clause: str, expected: str, content_type: str
) -> None:
    answer = curl(
        *reader, f"{base}/", "--data-binary", f"SELECT * FROM {table} ORDER BY id {format_clause}"
    )
    assert answer.status == 200, answer.body
    assert answer.body == expected
    assert answer.headers["content-type"].startswith(content_type)
    assert answer.headers["x-clickhouse-format"] == (
        format_clause.split()[-1] if format_clause else "TabSeparated"
    )


def test_default_format_parameter_header_database_query_id_and_bind(
    clickhouse_settings: ClickHouseSettings, base: str, reader: list[str], table: str
) -> None:
    by_param = curl(
        *reader,
        f"{base}/?default_format=JSONCompact&database={clickhouse_settings.database}&query_id=q-1",
        "--data-binary",
        "SELECT count() FROM visits",
    )
    assert json.loads(by_param.body)["data"] == [[2]]
    assert by_param.headers["x-clickhouse-query-id"] == "q-1"
    by_header = curl(
        *reader,
        "-H",
        "X-ClickHouse-Format: CSVWithNames",
        f"{base}/?query=" + quote(f"SELECT id FROM {table} ORDER BY id"),
    )
    assert by_header.body == '"id"\n1\n2\n'
    bound = curl(*reader, f"{base}/?param_n=40&query=" + quote("SELECT {n:UInt8} + 2"))
    assert bound.body == "42\n"


def test_inserts_in_body_in_url_chunked_and_gzip(
    base: str, writer: list[str], reader: list[str], table: str, tmp_path: Path
) -> None:
    assert (
        curl(
            *writer,
            f"{base}/",
            "--data-binary",
            f"INSERT INTO {table} FORMAT CSV\n3,Referral\n4,Display\n",
        ).status
        == 200
    )
    url_insert = curl(
        *writer,
        f"{base}/?query=" + quote(f"INSERT INTO {table} FORMAT TabSeparated"),
        "--data-binary",
        "5\tEmail\n",
    )
    assert url_insert.status == 200
    assert json.loads(url_insert.headers["x-clickhouse-summary"])["written_rows"] == "1"
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "".join(json.dumps({"id": 100 + i, "channel": "Affiliate"}) + "\n" for i in range(5000))
    )
    chunked = curl(
        *writer,
        "-H",
        "Transfer-Encoding: chunked",
        f"{base}/?query=" + quote(f"INSERT INTO {table} FORMAT JSONEachRow"),
        "--data-binary",
        f"@{data}",
    )
    assert chunked.status == 200, chunked.body
    packed = tmp_path / "rows.csv.gz"
    packed.write_bytes(
        gzip.compress(b"".join(b"%d,Organic Search\n" % (10_000 + i) for i in range(1000)))
        + gzip.compress(b"20000,Other\n")
    )
    gz = curl(
        *writer,
        "-H",
        "Content-Encoding: gzip",
        f"{base}/?query=" + quote(f"INSERT INTO {table} FORMAT CSV"),
        "--data-binary",
        f"@{packed}",
    )
    assert gz.status == 200, gz.body
    counts = curl(
        *reader,
        f"{base}/",
        "--data-binary",
        f"SELECT channel, count() FROM {table} GROUP BY channel ORDER BY channel FORMAT JSONCompact",
    )
    assert json.loads(counts.body)["data"] == [
        ["Affiliate", 5000],
        ["Direct", 1],
        ["Display", 1],
        ["Email", 2],
        ["Organic Search", 1000],
        ["Other", 1],
        ["Referral", 1],
    ]


def test_compressed_answer_when_asked(base: str, reader: list[str]) -> None:
    answer = curl(
        *reader,
        "--compressed",
        f"{base}/?enable_http_compression=1&query="
        + quote("SELECT number FROM numbers(1000) FORMAT CSV"),
    )
    assert answer.headers.get("content-encoding") in {"gzip", "deflate", "zstd"}
    assert answer.body == "".join(f"{i}\n" for i in range(1000))
    plain = curl(*reader, "--compressed", f"{base}/?query=" + quote("SELECT 1"))
    assert "content-encoding" not in plain.headers


def test_users_by_basic_auth_and_clickhouse_headers(
    clickhouse_settings: ClickHouseSettings, base: str, table: str
) -> None:
    user, key = clickhouse_settings.username, clickhouse_settings.password.get_secret_value()
    by_headers = curl(
        "-H",
        f"X-ClickHouse-User: {user}",
        "-H",
        f"X-ClickHouse-Key: {key}",
        f"{base}/",
        "--data-binary",
        f"INSERT INTO {table} VALUES (9, 'Email')",
    )
    assert by_headers.status == 200, by_headers.body
    anonymous = curl(f"{base}/?query=" + quote(f"SELECT count() FROM {table}"))
    assert anonymous.body == "3\n"
    anonymous_write = curl(f"{base}/", "--data-binary", f"INSERT INTO {table} VALUES (10, 'Email')")
    assert anonymous_write.headers["x-clickhouse-exception-code"] == "164"


def _assert_error(answer: Answer, status: int, code: int, text: str) -> None:
    assert answer.status == status, answer.body
    assert answer.headers["x-clickhouse-exception-code"] == str(code)
    assert answer.body.startswith(f"Code: {code}. DB::Exception: ")
    assert text in answer.body


def test_errors_like_clickhouse(
    clickhouse_settings: ClickHouseSettings,
    base: str,
    writer: list[str],
    reader: list[str],
    table: str,
) -> None:
    _assert_error(curl(*reader, f"{base}/", "--data-binary", "SELEC 1"), 400, 62, "Syntax error")
    _assert_error(
        curl(*reader, f"{base}/?query=" + quote("SELECT * FROM nowhere")), 404, 60, "nowhere"
    )
    wrong = ["-u", f"{clickhouse_settings.username}:wrong"]
    _assert_error(curl(*wrong, f"{base}/?query=SELECT+1"), 403, 516, "Authentication failed")
    _assert_error(
        curl(
            "-H",
            "X-ClickHouse-User: nobody",
            "-H",
            "X-ClickHouse-Key: x",
            f"{base}/?query=SELECT+1",
        ),
        403,
        516,
        "nobody: Authentication failed",
    )
    read_only_write = curl(
        *reader, f"{base}/", "--data-binary", f"INSERT INTO {table} VALUES (3, 'Email')"
    )
    _assert_error(read_only_write, 500, 164, "readonly")
    assert (
        f"{clickhouse_settings.readonly_username}: Cannot execute query in readonly mode"
        in read_only_write.body
    )
    lift = curl(
        *reader, f"{base}/?readonly=0", "--data-binary", f"INSERT INTO {table} VALUES (3, 'Email')"
    )
    _assert_error(lift, 500, 164, "readonly")
    lift_in_sql = curl(*reader, f"{base}/", "--data-binary", "SET readonly = 0")
    _assert_error(lift_in_sql, 500, 164, "readonly")
    get_write = curl(*writer, f"{base}/?query=" + quote(f"INSERT INTO {table} VALUES (3, 'Email')"))
    _assert_error(get_write, 500, 164, "readonly")
    _assert_error(
        curl(*reader, f"{base}/?no_such_setting=1&query=SELECT+1"), 404, 115, "no_such_setting"
    )
    count = curl(*reader, f"{base}/?query=" + quote(f"SELECT count() FROM {table}"))
    assert count.body == "2\n"


def test_session_is_locked_while_busy_and_expires_after_its_timeout(
    base: str, reader: list[str]
) -> None:
    locked = None
    # Under load our probe may take the session first; then the slow query is the one refused,
    # so try again with a fresh session (a few times at most).
    for _ in range(3):
        session = f"session_id=s-{uuid.uuid4()}"
        assert curl(*reader, f"{base}/?{session}&query=SELECT+1").status == 200
        slow = subprocess.Popen(
            ["curl", "-sS", *reader, f"{base}/?{session}&query=" + quote("SELECT sleep(2)")],
            stdout=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and slow.poll() is None:
                answer = curl(*reader, f"{base}/?{session}&query=SELECT+1")
                if answer.status != 200:
                    locked = answer
                    break
                time.sleep(0.05)
        finally:
            slow.wait(30)
        if locked is not None:
            break
    assert locked is not None, "the session was never seen busy"
    _assert_error(locked, 500, 373, "locked by a concurrent client")
    short = f"session_id=s-{uuid.uuid4()}&session_timeout=1"
    created = curl(
        *reader, f"{base}/?{short}", "--data-binary", "CREATE TEMPORARY TABLE t (x UInt8)"
    )
    assert created.status == 200, created.body
    assert curl(*reader, f"{base}/?{short}&session_check=1&query=SELECT+1").status == 200
    # Each check uses the session again, so wait longer than its timeout between checks.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        time.sleep(4)
        gone = curl(*reader, f"{base}/?{short}&session_check=1&query=SELECT+1")
        if gone.status != 200:
            break
    _assert_error(gone, 500, 372, "not found")


def test_large_answers_stream_and_mid_stream_errors_end_the_body(
    base: str, reader: list[str]
) -> None:
    big = curl(*reader, f"{base}/?query=" + quote("SELECT number FROM numbers(2000000) FORMAT CSV"))
    assert big.status == 200
    assert big.headers.get("transfer-encoding") == "chunked"
    lines = big.body.splitlines()
    assert len(lines) == 2_000_000
    assert lines[-1] == "1999999"
    waited = curl(
        *reader,
        f"{base}/?wait_end_of_query=1&query="
        + quote("SELECT number FROM numbers(2000000) FORMAT CSV"),
    )
    assert "content-length" in waited.headers
    assert waited.body == big.body
    packed = curl(
        *reader,
        "--compressed",
        f"{base}/?enable_http_compression=1&query="
        + quote("SELECT number FROM numbers(2000000) FORMAT TSV"),
    )
    assert packed.headers["content-encoding"] in {"gzip", "deflate", "zstd"}
    assert packed.body == big.body
    broken = curl(
        *reader,
        f"{base}/?query="
        + quote(
            "SELECT throwIf(number = 900000, 'boom') FROM numbers(2000000) SETTINGS max_block_size = 10000 FORMAT CSV"
        ),
    )
    assert broken.status == 200
    assert "Code: 395. DB::Exception:" in broken.body.splitlines()[-1]
    stopped = curl(
        *reader,
        f"{base}/?wait_end_of_query=1&query="
        + quote(
            "SELECT throwIf(number = 900000, 'boom') FROM numbers(2000000) SETTINGS max_block_size = 10000 FORMAT CSV"
        ),
    )
    _assert_error(stopped, 500, 395, "boom")


def test_malformed_insert_data_is_refused_whole(
    base: str, writer: list[str], reader: list[str], table: str
) -> None:
    bad = curl(
        *writer,
        f"{base}/",
        "--data-binary",
        f"INSERT INTO {table} FORMAT CSV\n7,Email\nnot-a-number,Direct\n",
    )
    assert bad.status == 400, bad.body
    assert bad.body.startswith("Code: ")
    assert int(bad.headers["x-clickhouse-exception-code"]) in {6, 27, 117}
    assert curl(*reader, f"{base}/?query=" + quote(f"SELECT count() FROM {table}")).body == "2\n"


def test_a_session_survives_refused_and_read_only_requests(
    base: str, writer: list[str], reader: list[str], table: str
) -> None:
    for who in (reader, writer):
        session = f"session_id=s-{uuid.uuid4()}"
        assert (
            curl(
                *who,
                f"{base}/?{session}&max_threads=1",
                "--data-binary",
                "CREATE TEMPORARY TABLE keep (x UInt8)",
            ).status
            == 200
        )
        refused = curl(
            *who,
            f"{base}/?{session}&readonly=0",
            "--data-binary",
            f"INSERT INTO {table} VALUES (50, 'x')",
        )
        if who is reader:
            _assert_error(refused, 500, 164, "readonly")
        else:
            assert refused.status == 200, refused.body
        only_read = curl(
            *who,
            f"{base}/?{session}&readonly=1",
            "--data-binary",
            f"INSERT INTO {table} VALUES (51, 'x')",
        )
        _assert_error(only_read, 500, 164, "readonly")
        assert (
            curl(
                *who, f"{base}/?{session}&max_threads=3&query=" + quote("SELECT count() FROM keep")
            ).body
            == "0\n"
        )
        assert (
            curl(
                *who, f"{base}/?{session}&query=" + quote("SELECT getSetting('max_threads')")
            ).status
            == 200
        )
    assert curl(*writer, f"{base}/?query=" + quote(f"SELECT count() FROM {table}")).body == "3\n"


def test_bad_row_at_the_end_of_a_large_chunked_insert(
    base: str, writer: list[str], reader: list[str], table: str, tmp_path: Path
) -> None:
    data = tmp_path / "rows.csv"
    data.write_bytes(b"".join(b"%d,Email\n" % i for i in range(300_000)) + b"oops,Email\n")
    bad = curl(
        *writer,
        "-H",
        "Transfer-Encoding: chunked",
        f"{base}/?query=" + quote(f"INSERT INTO {table} FORMAT CSV"),
        "--data-binary",
        f"@{data}",
    )
    assert bad.status == 400, bad.body
    assert int(bad.headers["x-clickhouse-exception-code"]) in {6, 27, 117}
    # The connection and the server carry on; nothing of the refused insert is visible.
    assert curl(*reader, f"{base}/?query=" + quote(f"SELECT count() FROM {table}")).body == "2\n"
