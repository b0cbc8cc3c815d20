"""Warehouse lifecycle: data survives restarts, migrations apply once, readers and a writer run together."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from services.common.clickhouse import get_client
from services.common.settings import ClickHouseSettings
from services.warehouse.migrations import MigrationError, apply_migrations, discover
from services.warehouse.settings import MIGRATIONS_DIR
from tests.fixtures.warehouse import WarehouseServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_data_survives_a_restart(tmp_path: Path) -> None:
    server = WarehouseServer(free_port(), tmp_path / "data", tmp_path / "warehouse.log").start()
    try:
        client = get_client(server.settings(), database="closedloop")
        client.command("CREATE TABLE kept (id UInt64, note String) ENGINE = MergeTree ORDER BY id")
        n = 200_000
        client.insert(
            "kept",
            [list(range(n)), [f"n{i % 7}" for i in range(n)]],
            column_names=["id", "note"],
            column_oriented=True,
        )
        before = client.query("SELECT count(), sum(id), uniqExact(note) FROM kept").result_rows
        client.close()
    finally:
        assert server.stop() == 0, server.process.tail() if server.process else ""
    server.start()
    try:
        client = get_client(server.settings(), database="closedloop")
        assert (
            client.query("SELECT count(), sum(id), uniqExact(note) FROM kept").result_rows == before
        )
        assert before == [(n, n * (n - 1) // 2, 7)]
        versions = client.query(
            "SELECT version, count() FROM schema_migrations GROUP BY version"
        ).result_rows
        assert len(versions) == len(discover(MIGRATIONS_DIR))
        assert all(times == 1 for _, times in versions), versions
        client.close()
    finally:
        assert server.stop() == 0


def test_migrations_apply_in_order_once_and_refuse_edits(
    clickhouse_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    client = get_client(clickhouse_settings, database="")
    database = f"m_{uuid.uuid4().hex[:10]}"
    (tmp_path / "001_first.sql").write_text(
        "-- two statements, one comment\n"
        "CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "INSERT INTO a VALUES (1);\n"
    )
    (tmp_path / "002_second.sql").write_text(
        "CREATE VIEW IF NOT EXISTS a_view AS SELECT x * 10 AS y FROM a\n"
    )
    applied = apply_migrations(client, database, tmp_path)
    assert [m.version for m in applied] == [1, 2]
    assert apply_migrations(client, database, tmp_path) == []
    assert client.command(f"SELECT y FROM {database}.a_view") == 10
    (tmp_path / "001_first.sql").write_text(
        "CREATE TABLE IF NOT EXISTS b (x UInt8) ENGINE = Memory\n"
    )
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(client, database, tmp_path)
    (tmp_path / "001_first.sql").unlink()
    (tmp_path / "003_broken.sql").write_text("CREATE TABLE broken (x NoSuchType) ENGINE = Memory\n")
    with pytest.raises(MigrationError, match="003_broken.sql statement 1"):
        apply_migrations(client, database, tmp_path)


def test_project_migrations_apply_to_a_fresh_database(
    clickhouse_settings: ClickHouseSettings,
) -> None:
    client = get_client(clickhouse_settings)
    recorded = [
        row[0]
        for row in client.query(
            "SELECT version FROM schema_migrations ORDER BY version"
        ).result_rows
    ]
    assert recorded == [m.version for m in discover(MIGRATIONS_DIR)]


def test_migrate_command(clickhouse_settings: ClickHouseSettings) -> None:
    database = f"cli_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "CLICKHOUSE_PORT": str(clickhouse_settings.port),
        "CLICKHOUSE_HOST": "127.0.0.1",
    }
    command = [sys.executable, "-m", "services.warehouse.migrations", "--database", database]
    first = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{database}: applied ")
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "none (up to date)" in again.stdout
    refused = subprocess.run(
        command,
        env={**env, "CLICKHOUSE_PASSWORD": "wrong"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "Authentication failed" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_readers_and_one_writer_at_once(clickhouse_settings: ClickHouseSettings) -> None:
    writer = get_client(clickhouse_settings)
    writer.command(
        "CREATE TABLE busy (batch UInt32, id UInt64) ENGINE = MergeTree ORDER BY (batch, id)"
    )
    batches, per_batch = 25, 20_000
    errors: list[BaseException] = []
    seen: dict[int, list[int]] = {}
    done = threading.Event()

    def write() -> None:
        try:
            for batch in range(batches):
                writer.insert(
                    "busy",
                    [[batch] * per_batch, list(range(per_batch))],
                    column_names=["batch", "id"],
                    column_oriented=True,
                )
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            done.set()

    def read(number: int) -> None:
        client = get_client(clickhouse_settings, readonly=True)
        counts = seen.setdefault(number, [])
        try:
            while not done.is_set():
                count, complete = client.query(
                    f"SELECT count(), countIf(c = {per_batch}) FROM "
                    "(SELECT batch, count() AS c FROM busy GROUP BY batch)"
                ).result_rows[0]
                assert count == complete, "a reader saw half an insert"
                counts.append(int(count))
                client.query("SELECT uniqExact(id), max(batch) FROM busy")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [
        threading.Thread(target=read, args=(i,)) for i in range(4)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert time.monotonic() - started < 120
    assert writer.command("SELECT count() FROM busy") == batches * per_batch
    for counts in seen.values():
        assert counts == sorted(counts), "counts went backwards"
    assert sum(len(c) for c in seen.values()) >= 4


def test_a_crash_during_inserts_leaves_whole_inserts_readable(tmp_path: Path) -> None:
    server = WarehouseServer(free_port(), tmp_path / "data", tmp_path / "warehouse.log").start()
    client = get_client(server.settings(), database="closedloop")
    client.command(
        "CREATE TABLE crashy (batch UInt32, id UInt32) ENGINE = MergeTree ORDER BY (batch, id)"
    )
    per_batch = 10_000
    acknowledged: list[int] = []

    def insert_forever() -> None:
        batch = 0
        try:
            while True:
                client.insert(
                    "crashy",
                    [[batch] * per_batch, list(range(per_batch))],
                    column_names=["batch", "id"],
                    column_oriented=True,
                )
                acknowledged.append(batch)
                batch += 1
        except Exception:  # noqa: BLE001 - the server is killed under it on purpose
            return

    writer = threading.Thread(target=insert_forever)
    writer.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.process is not None
    server.process.kill()
    writer.join(60)
    server.start()
    try:
        reader = get_client(server.settings(), database="closedloop")
        rows = reader.query("SELECT batch, count() FROM crashy GROUP BY batch").result_rows
        counts = dict(rows)
        assert set(acknowledged) <= set(counts), "an acknowledged insert was lost"
        assert all(count == per_batch for count in counts.values()), "a torn insert is visible"
    finally:
        assert server.stop() == 0
