"""Settings of the embedded warehouse (env prefix ``WAREHOUSE_``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import LOCAL_DIR, PROJECT_ROOT, ClickHouseSettings

MIGRATIONS_DIR = PROJECT_ROOT / "schemas" / "clickhouse"


class WarehouseSettings(BaseSettings):
    """Where the embedded warehouse listens, keeps its data, and whom it lets in."""

    model_config = SettingsConfigDict(env_prefix="WAREHOUSE_", frozen=True, extra="ignore")

    host: str | None = Field(
        default=None, description="Listen address; default CLICKHOUSE_HOST (127.0.0.1)."
    )
    port: int | None = Field(
        default=None, description="Listen port; default CLICKHOUSE_PORT (8123)."
    )
    data_dir: Path = Field(
        default=LOCAL_DIR / "warehouse",
        description="Folder holding all warehouse data (chDB path).",
    )
    migrations_dir: Path = Field(
        default=MIGRATIONS_DIR, description="Folder of NNN_name.sql migrations applied at start."
    )
    migrate_on_start: bool = Field(
        default=True, description="Apply the migrations to CLICKHOUSE_DATABASE at start."
    )
    anonymous_readonly: bool = Field(
        default=True,
        description="Requests without credentials act as the read-only user (as ClickHouse's "
        "passwordless `default` user lets `curl` in); wrong credentials are always refused.",
    )
    session_timeout_seconds: int = Field(
        default=60, ge=1, le=3600, description="Default idle timeout of an HTTP session_id."
    )
    log_level: str = Field(default="INFO", description="Log level.")
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)

    @property
    def listen_host(self) -> str:
        """The address to bind."""
        return self.host or self.clickhouse.host

    @property
    def listen_port(self) -> int:
        """The port to bind."""
        return self.port if self.port is not None else self.clickhouse.port


@cache
def get_settings() -> WarehouseSettings:
    """The settings, read from the environment once."""
    return WarehouseSettings()
