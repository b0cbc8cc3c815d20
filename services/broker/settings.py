"""Settings of the local broker (env prefix ``LOCAL_KAFKA_``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import LOCAL_DIR, KafkaSettings


class LocalKafkaSettings(BaseSettings):
    """Where and how the project runs its own single-node Apache Kafka."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_KAFKA_", frozen=True, extra="ignore")

    version: str = Field(
        default="4.1.1", description="Apache Kafka version fetched from Maven Central."
    )
    port: int = Field(default=9092, description="Client (PLAINTEXT) port on 127.0.0.1.")
    controller_port: int = Field(default=9093, description="KRaft controller port on 127.0.0.1.")
    data_dir: Path = Field(default=LOCAL_DIR / "kafka-data", description="Log dirs and metadata.")
    heap: str = Field(default="512m", description="JVM heap (-Xmx) of the broker.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


@cache
def get_settings() -> LocalKafkaSettings:
    """The settings, read from the environment once."""
    return LocalKafkaSettings()
