"""`closedloop migrate`: apply schemas/clickhouse/NNN_name.sql in order, once each, per database."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.common.errors import ClosedloopError
from services.warehouse.protocol import quote_identifier
from services.warehouse.settings import MIGRATIONS_DIR

MIGRATION_FILE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")
TABLE = "schema_migrations"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (version UInt32, name String, checksum String, "
    "applied_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY version"
)


class MigrationError(ClosedloopError):
    """A migration file that is malformed, changed after it was applied, or failed to run."""


class QueryResult(Protocol):
    @property
    def result_rows(self) -> Sequence[Sequence[Any]]: ...


class SqlClient(Protocol):
    """What the runner needs of a client (a clickhouse-connect Client satisfies it)."""

    def command(self, cmd: str, *, settings: dict[str, Any] | None = None) -> Any: ...

    def query(self, query: str, *, settings: dict[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True)
class Migration:
    """One ``NNN_name.sql`` file: its version, name, statements and checksum."""

    version: int
    name: str
    path: Path
    statements: tuple[str, ...]
    checksum: str


def split_statements(text: str) -> list[str]:
    """Statements of a file: separated by ``;`` at a line end; comment-only pieces dropped."""
    statements: list[str] = []
    current: list[str] = []

    def flush() -> None:
        statement = "\n".join(current).strip().rstrip(";").strip()
        code = [
            ln for ln in statement.splitlines() if ln.strip() and not ln.strip().startswith("--")
        ]
        if code:
            statements.append(statement)
        current.clear()

    for line in text.splitlines():
        current.append(line)
        stripped = line.strip()
        if stripped.endswith(";") and not stripped.startswith("--"):
            flush()
    flush()
    return statements


def discover(directory: Path) -> list[Migration]:
    """The migrations in ``directory``, in version order."""
    migrations: list[Migration] = []
    seen: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        version = int(match.group(1))
        if version in seen:
            raise MigrationError(f"{path.name}: version {version} is also used by {seen[version]}")
        seen[version] = path.name
        text = path.read_text(encoding="utf-8")
        migrations.append(
            Migration(
                version=version,
                name=match.group(2),
                path=path,
                statements=tuple(split_statements(text)),
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    return sorted(migrations, key=lambda m: m.version)


def applied_versions(client: SqlClient, database: str) -> dict[int, str]:
    """version -> checksum of the migrations recorded in ``database``."""
    result = client.query(
        f"SELECT version, any(checksum) FROM {TABLE} GROUP BY version ORDER BY version",
        settings={"database": database},
    )
    return {int(row[0]): str(row[1]) for row in result.result_rows}


def apply_migrations(
    client: SqlClient, database: str, directory: Path = MIGRATIONS_DIR
) -> list[Migration]:
    """Create ``database`` if needed and apply the pending migrations; returns those applied."""
    migrations = discover(directory) if directory.is_dir() else []
    on_db = {"database": database}
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
        client.command(CREATE_TABLE, settings=on_db)
        done = applied_versions(client, database)
    except Exception as exc:
        raise MigrationError(f"cannot prepare {database}.{TABLE}: {exc}") from exc
    applied: list[Migration] = []
    for migration in migrations:
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise MigrationError(
                    f"{migration.path.name} changed after it was applied to {database}; "
                    "add a new migration file instead"
                )
            continue
        for number, statement in enumerate(migration.statements, start=1):
            try:
                client.command(statement, settings=on_db)
            except Exception as exc:
                raise MigrationError(
                    f"{migration.path.name} statement {number} failed on {database}: {exc}"
                ) from exc
        client.command(
            f"INSERT INTO {TABLE} (version, name, checksum, applied_at) VALUES "
            f"({migration.version}, '{migration.name}', '{migration.checksum}', now64(3))",
            settings=on_db,
        )
        applied.append(migration)
    return applied


def main(argv: list[str] | None = None) -> int:
    """`closedloop migrate [--database DB] [--dir DIR]` against CLICKHOUSE_* (writer user)."""
    from services.common.clickhouse import get_client  # noqa: PLC0415 - I/O only in the command
    from services.common.settings import ClickHouseSettings  # noqa: PLC0415

    settings = ClickHouseSettings()
    parser = argparse.ArgumentParser(prog="closedloop migrate", description=__doc__)
    parser.add_argument("--database", default=settings.database, help="target database")
    parser.add_argument("--dir", type=Path, default=MIGRATIONS_DIR, help="migrations folder")
    args = parser.parse_args(argv)
    try:
        client = get_client(settings, database="")
        applied = apply_migrations(client, args.database, args.dir)
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a CLI prints the reason, not a traceback
        print(
            f"migrate: cannot reach ClickHouse at {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    names = ", ".join(f"{m.version:03d}_{m.name}" for m in applied) or "none (up to date)"
    print(f"{args.database}: applied {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
