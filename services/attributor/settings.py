"""Settings of the attributor (env prefix ``ATTRIBUTOR_``)."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import ClickHouseSettings, KafkaSettings


class AttributorSettings(BaseSettings):
    """Everything the attributor reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="ATTRIBUTOR_", frozen=True, extra="ignore")

    consumer_group: str = Field(
        default="closedloop-attributor", description="Kafka consumer group."
    )
    log_level: str = Field(default="INFO", description="Log level.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)


@cache
def get_settings() -> AttributorSettings:
    """The settings, read from the environment once."""
    return AttributorSettings()
