"""Settings shared by every service: Kafka, ClickHouse, identity, and the env-var catalogue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = PROJECT_ROOT / ".local"


def _local_broker_address() -> str:
    """The local broker's address, so that moving LOCAL_KAFKA_PORT moves the clients too."""
    return f"127.0.0.1:{os.environ.get('LOCAL_KAFKA_PORT', '9092')}"


class KafkaSettings(BaseSettings):
    """Where the broker is and how to talk to it (env prefix ``KAFKA_``)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", frozen=True, extra="ignore")

    bootstrap_servers: str = Field(
        default_factory=_local_broker_address,
        description="Broker list. When unset, `make run` starts a local Apache Kafka on "
        "127.0.0.1:LOCAL_KAFKA_PORT and every service uses it.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="librdkafka security.protocol."
    )
    sasl_mechanism: str | None = Field(
        default=None, description="SASL mechanism (PLAIN, SCRAM-SHA-512...)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    topic_prefix: str = Field(default="", description="Prefix put before every topic name.")
    partitions: int = Field(
        default=6, ge=1, description="Partition count of the co-partitioned topics (all of them)."
    )
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of new topics."
    )
    linger_ms: int = Field(default=5, ge=0, description="Producer linger.ms.")
    batch_size: int = Field(default=262144, ge=1, description="Producer batch.size in bytes.")
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="lz4", description="Producer compression.type."
    )
    delivery_timeout_ms: int = Field(
        default=10000, ge=1000, description="How long a produce may wait for the broker's ack."
    )

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings common to producers, consumers and admin clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            config["sasl.password"] = self.sasl_password.get_secret_value()
        return config

    def topic(self, name: str) -> str:
        """The broker-side name of a topic from ``schemas.topics``."""
        return f"{self.topic_prefix}{name}"


class ClickHouseSettings(BaseSettings):
    """Where ClickHouse is (env prefix ``CLICKHOUSE_``); defaults point at the embedded warehouse."""

    model_config = SettingsConfigDict(env_prefix="CLICKHOUSE_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="ClickHouse HTTP host.")
    port: int = Field(default=8123, description="ClickHouse HTTP port.")
    secure: bool = Field(default=False, description="Use HTTPS.")
    database: str = Field(
        default="closedloop", description="Database holding the closedloop tables."
    )
    username: str = Field(default="closedloop", description="Writer user.")
    password: SecretStr = Field(default=SecretStr("closedloop"), description="Writer password.")
    readonly_username: str = Field(default="bi", description="Read-only user for BI tools.")
    readonly_password: SecretStr = Field(default=SecretStr("bi"), description="Read-only password.")


class IdentitySettings(BaseSettings):
    """How e-mail addresses become lead IDs (env prefix ``IDENTITY_``); shared by stitcher and crm_ingest."""

    model_config = SettingsConfigDict(env_prefix="IDENTITY_", frozen=True, extra="ignore")

    secret: SecretStr = Field(
        default=SecretStr("closedloop-local-development-secret"),
        description="HMAC-SHA256 key for lead IDs. Set a long random value in production; "
        "changing it changes every lead ID.",
    )
    gmail_remove_dots: bool = Field(
        default=True, description="Treat dots in gmail.com / googlemail.com local parts as absent."
    )
    strip_plus_tags: bool = Field(
        default=False, description="Drop '+tag' from the local part of every address."
    )


def known_env_vars(settings_class: type[BaseSettings]) -> set[str]:
    """Every environment variable a settings class (and its nested settings) reads."""
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    delimiter = settings_class.model_config.get("env_nested_delimiter") or "__"
    names: set[str] = set()
    for field_name, field in settings_class.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            names |= known_env_vars(annotation)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub_name in annotation.model_fields:
                names.add(f"{prefix}{field_name}{delimiter}{sub_name}".upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names
