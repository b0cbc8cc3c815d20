"""Settings of the attributor (env prefix ``ATTRIBUTOR_``)."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.attributor.models import ModelSettings
from services.common.settings import ClickHouseSettings, KafkaSettings


class AttributorSettings(BaseSettings):
    """Everything the attributor reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="ATTRIBUTOR_", frozen=True, extra="ignore")

    consumer_group: str = Field(
        default="closedloop-attributor", description="Kafka consumer group."
    )
    log_level: str = Field(default="INFO", description="Log level.")
    lookback_days: float = Field(
        default=90, ge=0, description="Touches older than this before a conversion earn no credit."
    )
    half_life_days: float = Field(default=7, gt=0, description="Half-life of the time-decay model.")
    batch_max_messages: int = Field(
        default=5000, ge=1, description="Flush to ClickHouse after this many input messages..."
    )
    batch_max_seconds: float = Field(
        default=1.0, gt=0, description="...or this many seconds after the first unflushed one."
    )
    markov_refresh_seconds: float = Field(
        default=3600,
        ge=0,
        description="Refit the data-driven (Markov) model from ClickHouse this often; 0 = never "
        "(data-driven credits fall back to linear).",
    )
    session_timeout_ms: int = Field(
        default=45000,
        ge=1000,
        description="Kafka session.timeout.ms: how long a crashed worker's partitions wait "
        "before another worker (or its restart) takes them.",
    )
    exit_after_flushes: int = Field(
        default=0,
        ge=0,
        description="Test only: exit hard (os._exit) right after this many flushes, before "
        "committing offsets. 0 = never.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)

    def model_settings(self) -> ModelSettings:
        """The attribution models' lookback and half-life (data-driven weights are fitted at run time)."""
        return ModelSettings(
            lookback=timedelta(days=self.lookback_days),
            half_life=timedelta(days=self.half_life_days),
        )


@cache
def get_settings() -> AttributorSettings:
    """The settings, read from the environment once."""
    return AttributorSettings()
