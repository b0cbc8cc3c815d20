"""Run the embedded warehouse: `python -m services.warehouse` (SIGTERM/SIGINT stop it cleanly)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

import uvicorn

from services.common.logging import configure_logging
from services.warehouse.app import create_app
from services.warehouse.engine import Engine
from services.warehouse.migrations import apply_migrations
from services.warehouse.protocol import ClickHouseError
from services.warehouse.settings import WarehouseSettings, get_settings

log = logging.getLogger("services.warehouse")


class _Rows:
    def __init__(self, rows: list[list[str]]) -> None:
        self.result_rows = rows


class EngineClient:
    """The migration runner's client, in-process: statements run on the engine directly."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, sql: str, settings: dict[str, Any] | None) -> bytes:
        with self.engine.connection() as lease:
            lease.prepare((settings or {}).get("database"), {})
            return lease.query(sql, "TabSeparated", {}).body

    def command(self, cmd: str, *, settings: dict[str, Any] | None = None) -> Any:
        return self._run(cmd, settings).decode()

    def query(self, query: str, *, settings: dict[str, Any] | None = None) -> Any:
        text = self._run(query, settings).decode()
        return _Rows([line.split("\t") for line in text.splitlines() if line])


def migrate_on_start(settings: WarehouseSettings) -> Any:
    """The start hook: apply the migrations to CLICKHOUSE_DATABASE."""

    def hook(engine: Engine) -> None:
        applied = apply_migrations(
            EngineClient(engine), settings.clickhouse.database, settings.migrations_dir
        )
        log.info(
            "migrations applied",
            extra={
                "database": settings.clickhouse.database,
                "applied": [f"{m.version:03d}_{m.name}" for m in applied],
            },
        )

    return hook


def main(argv: list[str] | None = None) -> int:
    """Serve the ClickHouse HTTP interface on the configured host and port until stopped."""
    argparse.ArgumentParser(
        prog="closedloop warehouse",
        description="Serve the ClickHouse HTTP interface over chDB; configured by WAREHOUSE_* "
        "and CLICKHOUSE_* variables (see services/warehouse/README.md).",
    ).parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    app = create_app(
        settings, on_start=migrate_on_start(settings) if settings.migrate_on_start else None
    )
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    log.info(
        "warehouse starting",
        extra={
            "host": settings.listen_host,
            "port": settings.listen_port,
            "data_dir": str(settings.data_dir),
        },
    )
    # uvicorn re-raises the stop signal after its graceful shutdown; with these no-op handlers
    # restored by then, a clean stop exits 0 instead of dying of the signal.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    try:
        server.run()
    except ClickHouseError as exc:
        print(f"warehouse: {exc}", file=sys.stderr)
        return 1
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
