"""Settings of the crm_ingest (env prefix ``CRM_INGEST_``)."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import IdentitySettings, KafkaSettings


class CrmIngestSettings(BaseSettings):
    """Everything the crm_ingest reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="CRM_INGEST_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8081, description="Port the HTTP server listens on.")
    log_level: str = Field(default="INFO", description="Log level.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)


@cache
def get_settings() -> CrmIngestSettings:
    """The settings, read from the environment once."""
    return CrmIngestSettings()
