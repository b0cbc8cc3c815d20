"""Settings of the stitcher (env prefix ``STITCHER_``)."""

from __future__ import annotations

from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import IdentitySettings, KafkaSettings
from services.stitcher.identity import DAY_MS, StitchConfig


class StitcherSettings(BaseSettings):
    """Everything the stitcher reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="STITCHER_", frozen=True, extra="ignore")

    consumer_group: str = Field(default="closedloop-stitcher", description="Kafka consumer group.")
    log_level: str = Field(default="INFO", description="Log level.")
    session_timeout_minutes: int = Field(
        default=30, ge=1, description="Inactivity after which the next hit opens a new session."
    )
    lookback_days: int = Field(
        default=90,
        ge=1,
        description="Retroactive stitching window before an identification; also how long "
        "anonymous history is kept and how late a hit may arrive.",
    )
    max_leads_per_anonymous_id: int = Field(
        default=5,
        ge=1,
        description="An anonymous ID linked to more leads than this is shared and no longer stitched.",
    )
    max_hits_per_anonymous_id: int = Field(
        default=500,
        ge=10,
        description="Cap on hits kept per anonymous ID (after compaction); the oldest whole "
        "sessions are evicted beyond it.",
    )
    max_identifications_per_anonymous_id: int = Field(
        default=100, ge=10, description="Cap on identifications kept per anonymous ID."
    )
    own_domains: str = Field(
        default="",
        description="Comma-separated domains of the tracked sites (and their subdomains): "
        "internal, never referrals.",
    )
    instance_id: str = Field(
        default="",
        description="Stable name of this worker (e.g. the pod name of a StatefulSet): its "
        "transactional ID, so a restart aborts the crashed run's open transaction at once. "
        "Empty: a random one, and the broker aborts it after the transaction timeout.",
    )
    batch_max_events: int = Field(
        default=1000, ge=1, description="Most events stitched in one transaction."
    )
    transaction_timeout_seconds: float = Field(
        default=10.0,
        ge=1,
        description="How long the broker keeps a crashed worker's open transaction before "
        "aborting it; downstream read_committed readers wait at most this long.",
    )
    commit_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Longest wait for a batch before its transaction commits (latency bound).",
    )
    group_session_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Consumer group session timeout: how long a crashed worker holds its "
        "partitions before the group moves them (the broker bounds it, 6 s minimum by default).",
    )
    group_heartbeat_seconds: float = Field(
        default=3.0, gt=0, description="Consumer group heartbeat interval."
    )
    group_rebalance_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long a rebalance waits for every member to rejoin."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)

    def stitch_config(self) -> StitchConfig:
        """The pure core's configuration."""
        return StitchConfig(
            session_timeout_ms=self.session_timeout_minutes * 60 * 1000,
            lookback_ms=self.lookback_days * DAY_MS,
            max_leads_per_anonymous_id=self.max_leads_per_anonymous_id,
            max_hits_per_anonymous_id=self.max_hits_per_anonymous_id,
            max_identifications_per_anonymous_id=self.max_identifications_per_anonymous_id,
        )

    def own_domain_list(self) -> list[str]:
        """``own_domains`` split on commas, blanks dropped."""
        return [d.strip() for d in self.own_domains.split(",") if d.strip()]


@cache
def get_settings() -> StitcherSettings:
    """The settings, read from the environment once."""
    return StitcherSettings()
