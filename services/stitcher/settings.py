"""Settings of the stitcher (env prefix ``STITCHER_``)."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import IdentitySettings, KafkaSettings


class StitcherSettings(BaseSettings):
    """Everything the stitcher reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="STITCHER_", frozen=True, extra="ignore")

    consumer_group: str = Field(
        default="closedloop-stitcher", description="faust app id / consumer group."
    )
    log_level: str = Field(default="INFO", description="Log level.")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)


@cache
def get_settings() -> StitcherSettings:
    """The settings, read from the environment once."""
    return StitcherSettings()
