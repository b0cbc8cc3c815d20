"""The Kubernetes manifests parse, and their environment names only variables the services read."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.attributor.settings import AttributorSettings
from services.collector.settings import CollectorSettings
from services.common.settings import known_env_vars
from services.crm_ingest.settings import CrmIngestSettings
from services.stitcher.settings import StitcherSettings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
SETTINGS_BY_MODULE = {
    "services.collector": CollectorSettings,
    "services.stitcher": StitcherSettings,
    "services.crm_ingest": CrmIngestSettings,
    "services.attributor": AttributorSettings,
}


def _documents() -> list[dict]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_config_map_and_secret_name_only_known_variables() -> None:
    every_known = set().union(*(known_env_vars(s) for s in SETTINGS_BY_MODULE.values()))
    for doc in _documents():
        if doc["kind"] in {"ConfigMap", "Secret"}:
            keys = set(doc.get("data", {})) | set(doc.get("stringData", {}))
            assert keys <= every_known, (
                f"{doc['metadata']['name']}: unknown {sorted(keys - every_known)}"
            )


def test_every_deployment_runs_a_service_with_its_own_variables() -> None:
    deployments = [d for d in _documents() if d["kind"] == "Deployment"]
    assert {
        d["spec"]["template"]["spec"]["containers"][0]["command"][2] for d in deployments
    } == set(SETTINGS_BY_MODULE)
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        settings_class = SETTINGS_BY_MODULE[container["command"][2]]
        names = {item["name"] for item in container.get("env", [])}
        assert names <= known_env_vars(settings_class), f"{deployment['metadata']['name']}: {names}"


def test_lag_autoscalers_do_not_exceed_the_partition_count() -> None:
    docs = _documents()
    partitions = int(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["KAFKA_PARTITIONS"])
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled
    assert all(d["spec"]["maxReplicaCount"] <= partitions for d in scaled)
