"""docker-compose.yml and the README stay in step with the settings classes."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.attributor.settings import AttributorSettings
from services.broker.settings import LocalKafkaSettings
from services.collector.settings import CollectorSettings
from services.common.settings import known_env_vars
from services.common.settings_doc import BEGIN, END, render_table
from services.crm_ingest.settings import CrmIngestSettings
from services.stitcher.settings import StitcherSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_BY_COMPOSE_SERVICE = {
    "collector": CollectorSettings,
    "stitcher": StitcherSettings,
    "crm_ingest": CrmIngestSettings,
    "attributor": AttributorSettings,
    "topics": LocalKafkaSettings,
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_closedloop_service_in_compose_has_a_settings_class() -> None:
    built = {
        name
        for name, svc in _compose()["services"].items()
        if svc.get("image") == "closedloop:latest"
    }
    assert built == set(SETTINGS_BY_COMPOSE_SERVICE)


def test_compose_environment_names_only_known_variables() -> None:
    services = _compose()["services"]
    for name, settings_class in SETTINGS_BY_COMPOSE_SERVICE.items():
        unknown = set(services[name].get("environment", {})) - known_env_vars(settings_class)
        assert not unknown, f"{name} sets variables its settings do not read: {sorted(unknown)}"


def test_known_env_vars_sees_nested_shared_settings() -> None:
    names = known_env_vars(CrmIngestSettings)
    assert {"CRM_INGEST_PORT", "KAFKA_BOOTSTRAP_SERVERS", "IDENTITY_SECRET"} <= names
    assert "CRM_INGEST_KAFKA" not in names


def test_readme_settings_table_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert table == render_table(), "README settings table is stale: run `make docs`"
