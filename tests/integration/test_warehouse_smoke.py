"""The warehouse fixtures give a working server and a migrated database."""

from __future__ import annotations

from services.common.clickhouse import get_client
from services.common.settings import ClickHouseSettings


def test_fresh_database_has_migrations_applied(clickhouse_settings: ClickHouseSettings) -> None:
    client = get_client(clickhouse_settings)
    versions = client.query("SELECT version FROM schema_migrations ORDER BY version").result_rows
    assert versions, "no migration recorded"
    assert client.command("SELECT currentDatabase()") == clickhouse_settings.database
