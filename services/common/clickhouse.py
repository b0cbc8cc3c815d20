"""Build clickhouse-connect clients from ClickHouseSettings (writer or read-only user)."""

from __future__ import annotations

from typing import Any

# This module is the shared ClickHouse adapter, so it is where clickhouse_connect belongs.
import clickhouse_connect  # noqa: TID251
from clickhouse_connect.driver.asyncclient import AsyncClient  # noqa: TID251
from clickhouse_connect.driver.client import Client  # noqa: TID251

from services.common.settings import ClickHouseSettings


def _client_args(
    settings: ClickHouseSettings, readonly: bool, database: str | None
) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "secure": settings.secure,
        "username": settings.readonly_username if readonly else settings.username,
        "password": (
            settings.readonly_password if readonly else settings.password
        ).get_secret_value(),
        "database": settings.database if database is None else database,
    }


def get_client(
    settings: ClickHouseSettings,
    *,
    readonly: bool = False,
    database: str | None = None,
    **kwargs: Any,
) -> Client:
    """A sync client; ``database=""`` connects without selecting one (before it exists)."""
    args = _client_args(settings, readonly, database)
    args.update(kwargs)
    return clickhouse_connect.get_client(**args)


async def get_async_client(
    settings: ClickHouseSettings,
    *,
    readonly: bool = False,
    database: str | None = None,
    **kwargs: Any,
) -> AsyncClient:
    """An async client with the same arguments as ``get_client``."""
    args = _client_args(settings, readonly, database)
    args.update(kwargs)
    return await clickhouse_connect.get_async_client(**args)
