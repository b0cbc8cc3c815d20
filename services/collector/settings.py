"""Settings of the collector (env prefix ``COLLECTOR_``)."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import KafkaSettings


class CollectorSettings(BaseSettings):
    """Everything the collector reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="COLLECTOR_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8080, description="Port the HTTP server listens on.")
    log_level: str = Field(default="INFO", description="Log level.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


@cache
def get_settings() -> CollectorSettings:
    """The settings, read from the environment once."""
    return CollectorSettings()
