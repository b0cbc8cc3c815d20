"""Settings of the collector (env prefix ``COLLECTOR_``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import LOCAL_DIR, KafkaSettings


class WriteKey(BaseModel):
    """What one write key may do: the site it writes for, browser origins, events per second."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site_id: str = Field(min_length=1, max_length=128)
    allowed_origins: tuple[str, ...] = Field(
        default=("*",),
        description="Origins browsers may send from: '*', 'https://shop.example.com' "
        "or 'https://*.example.com'.",
    )
    rate_limit_per_second: float = Field(
        default=1000.0, gt=0, description="Events per second per collector process (token bucket)."
    )


def _default_write_keys() -> dict[str, WriteKey]:
    return {
        "dev-write-key": WriteKey(
            site_id="dev", allowed_origins=("*",), rate_limit_per_second=1_000_000
        )
    }


class CollectorSettings(BaseSettings):
    """Everything the collector reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="COLLECTOR_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8080, description="Port the HTTP server listens on.")
    log_level: str = Field(default="INFO", description="Log level.")
    workers: int = Field(
        default=1, ge=1, description="uvicorn worker processes, each with its own producer."
    )
    write_keys: dict[str, WriteKey] = Field(
        default_factory=_default_write_keys,
        description='JSON object: write key -> {"site_id", "allowed_origins", '
        '"rate_limit_per_second"}. The local default is the key `dev-write-key` for site `dev`.',
    )
    max_event_bytes: int = Field(default=32 * 1024, ge=256, description="Largest single event.")
    max_batch_bytes: int = Field(
        default=500 * 1024, ge=1024, description="Largest request body (a batch)."
    )
    max_batch_events: int = Field(default=500, ge=1, description="Most events in one batch.")
    trust_forwarded_for: bool = Field(
        default=False,
        description="Take the client IP from X-Forwarded-For (only behind a trusted proxy).",
    )
    publish_timeout_ms: int = Field(
        default=3000,
        ge=500,
        description="How long an event waits for the broker's ack before it is spooled instead.",
    )
    spool_dir: Path = Field(
        default=LOCAL_DIR / "collector-spool",
        description="Local folder of the durable spool used while the broker is unreachable.",
    )
    spool_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=4096,
        description="Spool size per worker; when full the collector answers 503 with Retry-After.",
    )
    spool_segment_bytes: int = Field(
        default=8 * 1024 * 1024, ge=4096, description="Size at which a spool file is rolled."
    )
    tracker_max_age_seconds: int = Field(
        default=3600, ge=0, description="Cache-Control max-age of /v1/tracker.js."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


@cache
def get_settings() -> CollectorSettings:
    """The settings, read from the environment once."""
    return CollectorSettings()
