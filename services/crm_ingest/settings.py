"""Settings of the crm_ingest (env prefix ``CRM_INGEST_``)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import LOCAL_DIR, IdentitySettings, KafkaSettings


class CrmIngestSettings(BaseSettings):
    """Everything the crm_ingest reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="CRM_INGEST_", frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8081, description="Port the HTTP server listens on.")
    log_level: str = Field(default="INFO", description="Log level.")
    public_url: str | None = Field(
        default=None,
        description="Base URL the CRMs call (e.g. https://crm.example.com), used to rebuild the "
        "URI HubSpot signs when a proxy sits in front; default: the request's own URL.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest webhook body accepted (413 above)."
    )
    signature_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        description="How far a signed timestamp may be from our clock (HubSpot v3, generic, "
        "Salesforce Flow); a signature is accepted once within it (replays answer 401).",
    )
    dedupe_path: Path = Field(
        default=LOCAL_DIR / "crm_ingest" / "dedupe.sqlite3",
        description="SQLite file remembering delivered event IDs and used signatures.",
    )
    dedupe_window_hours: int = Field(
        default=168,
        ge=1,
        description="How long a delivered event ID is remembered (CRMs retry for up to 3 days).",
    )
    stage_map: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='CRM stage -> canonical stage per CRM, JSON: {"hubspot": {"contractsent": '
        '"negotiation"}}; a key "<pipeline>:<stage>" wins over "<stage>". Merged over the '
        "defaults for each CRM's standard pipeline.",
    )
    custom_stages: dict[str, int] = Field(
        default_factory=dict,
        description='Extra canonical stages and their funnel order, JSON: {"onboarding": 80}.',
    )
    stage_map_file: Path | None = Field(
        default=None,
        description='JSON file {"stage_map": {...}, "custom_stages": {...}} merged over '
        "CRM_INGEST_STAGE_MAP and CRM_INGEST_CUSTOM_STAGES.",
    )
    default_currency: str = Field(
        default="USD",
        description="Currency of amounts a CRM sends without one (the CRM account's currency).",
    )
    generic_secret: SecretStr = Field(
        default=SecretStr("dev-generic-secret"),
        description="HMAC-SHA256 secret of X-Closedloop-Signature on /v1/webhooks/generic.",
    )
    hubspot_client_secret: SecretStr = Field(
        default=SecretStr("dev-hubspot-secret"),
        description="The HubSpot app's client secret, key of its webhook signatures.",
    )
    hubspot_signature_versions: list[str] = Field(
        default=["v3"],
        description='HubSpot signature versions accepted, JSON list of "v3", "v2", "v1" '
        "(v1/v2 carry no timestamp, so they cannot refuse replays).",
    )
    hubspot_access_token: SecretStr | None = Field(
        default=None,
        description="HubSpot private-app token (scopes crm.objects.deals.read, "
        "crm.objects.contacts.read) to look up a deal's contact e-mail and amount; unset: no lookup.",
    )
    hubspot_api_url: str = Field(
        default="https://api.hubapi.com", description="HubSpot API base URL."
    )
    salesforce_organization_ids: list[str] = Field(
        default=["00D000000000062"],
        description="Salesforce organization IDs (15 or 18 characters) whose messages are "
        "accepted, JSON list.",
    )
    salesforce_outbound_token: SecretStr | None = Field(
        default=None,
        description="When set, Outbound Messages must call the URL with ?token=<this value>.",
    )
    salesforce_flow_secret: SecretStr = Field(
        default=SecretStr("dev-salesforce-secret"),
        description="HMAC-SHA256 secret of X-Closedloop-Signature on Salesforce Flow JSON callouts.",
    )
    salesforce_email_field: str = Field(
        default="Contact_Email__c",
        description="Opportunity field holding the contact's e-mail (e.g. a formula field).",
    )
    salesforce_pipeline_field: str = Field(
        default="RecordTypeId",
        description='Opportunity field used as the pipeline (absent: "default").',
    )
    pipedrive_username: str = Field(
        default="closedloop", description="HTTP basic-auth user name set on the Pipedrive webhook."
    )
    pipedrive_password: SecretStr = Field(
        default=SecretStr("dev-pipedrive-password"),
        description="HTTP basic-auth password set on the Pipedrive webhook.",
    )
    pipedrive_api_token: SecretStr | None = Field(
        default=None,
        description="Pipedrive API token to look up a deal person's e-mail; unset: no lookup.",
    )
    pipedrive_api_url: str = Field(
        default="https://api.pipedrive.com",
        description="Pipedrive API base URL (https://<company>.pipedrive.com works too).",
    )
    lookup_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of one CRM API lookup request."
    )
    lookup_cache_seconds: int = Field(
        default=3600, ge=0, description="How long a looked-up contact e-mail is cached."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)


@cache
def get_settings() -> CrmIngestSettings:
    """The settings, read from the environment once."""
    return CrmIngestSettings()
