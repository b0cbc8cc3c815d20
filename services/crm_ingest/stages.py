"""Per-CRM stage mapping to canonical stages with their funnel order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.channels import CANONICAL_STAGE_ORDER
from services.common.errors import ConfigurationError
from services.crm_ingest.errors import PayloadError

# The stages of each CRM's standard sales pipeline, as the CRM sends them (compared
# case-insensitively). Accounts with their own stages add to or override these.
DEFAULT_STAGE_MAP: dict[str, dict[str, str]] = {
    # HubSpot's default "Sales Pipeline" internal stage IDs.
    "hubspot": {
        "appointmentscheduled": "sql",
        "qualifiedtobuy": "opportunity",
        "presentationscheduled": "proposal",
        "decisionmakerboughtin": "negotiation",
        "contractsent": "negotiation",
        "closedwon": "closed_won",
        "closedlost": "closed_lost",
        # The same stages by label, as CSV exports write them.
        "appointment scheduled": "sql",
        "qualified to buy": "opportunity",
        "presentation scheduled": "proposal",
        "decision maker bought-in": "negotiation",
        "contract sent": "negotiation",
        "closed won": "closed_won",
        "closed lost": "closed_lost",
    },
    # Salesforce's standard Opportunity StageName picklist.
    "salesforce": {
        "prospecting": "lead",
        "qualification": "sql",
        "needs analysis": "opportunity",
        "value proposition": "opportunity",
        "id. decision makers": "opportunity",
        "perception analysis": "opportunity",
        "proposal/price quote": "proposal",
        "negotiation/review": "negotiation",
        "closed won": "closed_won",
        "closed lost": "closed_lost",
    },
    # Pipedrive stage IDs of a new account's first pipeline (Qualified, Contact Made,
    # Demo Scheduled, Proposal Made, Negotiations Started); won/lost come from status.
    "pipedrive": {
        "1": "sql",
        "2": "opportunity",
        "3": "opportunity",
        "4": "proposal",
        "5": "negotiation",
        # The same stages by name, as CSV exports write them.
        "qualified": "sql",
        "contact made": "opportunity",
        "demo scheduled": "opportunity",
        "proposal made": "proposal",
        "negotiations started": "negotiation",
    },
    "generic": {},
}


@dataclass(frozen=True)
class Stage:
    """A canonical stage, its funnel order and the won/lost flags it implies."""

    name: str
    order: int
    is_won: bool
    is_lost: bool


@dataclass(frozen=True)
class StageMap:
    """CRM stage names to canonical stages; canonical and custom stage names pass through."""

    mapping: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    orders: Mapping[str, int] = field(default_factory=lambda: dict(CANONICAL_STAGE_ORDER))

    @classmethod
    def build(
        cls,
        overrides: Mapping[str, Mapping[str, str]] | None = None,
        custom_stages: Mapping[str, int] | None = None,
        path: Path | None = None,
    ) -> StageMap:
        """The defaults, then ``overrides`` and ``custom_stages``, then the mapping file."""
        mapping = {crm: dict(stages) for crm, stages in DEFAULT_STAGE_MAP.items()}
        orders = dict(CANONICAL_STAGE_ORDER)
        layers: list[tuple[Mapping[str, Mapping[str, str]], Mapping[str, int]]] = [
            (overrides or {}, custom_stages or {})
        ]
        if path is not None:
            layers.append(_read_file(path))
        for layer_map, layer_custom in layers:
            for name, order in layer_custom.items():
                orders[name.strip().lower()] = int(order)
            for crm, stages in layer_map.items():
                target = mapping.setdefault(crm, {})
                for crm_stage, canonical in stages.items():
                    target[crm_stage.strip().lower()] = canonical.strip().lower()
        for crm, stages in mapping.items():
            for crm_stage, canonical in stages.items():
                if canonical not in orders:
                    raise ConfigurationError(
                        f"stage map {crm}: {crm_stage!r} maps to {canonical!r}, which is "
                        f"neither canonical nor a custom stage ({', '.join(orders)})"
                    )
        return cls(mapping, orders)

    def resolve(
        self,
        crm: str,
        pipeline: str,
        crm_stage: str | None,
        *,
        is_won: bool | None = None,
        is_lost: bool | None = None,
    ) -> Stage:
        """The canonical stage; explicit won/lost flags from the CRM win over the mapping."""
        if is_won and is_lost:
            raise PayloadError("is_won", "a deal cannot be both won and lost")
        if is_won:
            return Stage("closed_won", self.orders["closed_won"], True, False)
        if is_lost:
            return Stage("closed_lost", self.orders["closed_lost"], False, True)
        if crm_stage is None:
            raise PayloadError("stage", "is missing", "missing_field")
        key = crm_stage.strip().lower()
        stages = self.mapping.get(crm, {})
        name = stages.get(f"{pipeline.strip().lower()}:{key}") or stages.get(key)
        if name is None and key in self.orders:
            name = key
        if name is None:
            raise PayloadError(
                "stage",
                f"unknown {crm} stage {crm_stage!r} in pipeline {pipeline!r}: add it to "
                "CRM_INGEST_STAGE_MAP",
                "unknown_stage",
            )
        return Stage(name, self.orders[name], name == "closed_won", name == "closed_lost")


def _read_file(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    try:
        content: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"stage map file {path}: {exc}") from exc
    if not isinstance(content, dict):
        raise ConfigurationError(f"stage map file {path}: expected a JSON object")
    stage_map = content.get("stage_map", {})
    custom = content.get("custom_stages", {})
    if not isinstance(stage_map, dict) or not all(isinstance(v, dict) for v in stage_map.values()):
        raise ConfigurationError(f"stage map file {path}: stage_map must map CRM -> object")
    if not isinstance(custom, dict) or not all(isinstance(v, int) for v in custom.values()):
        raise ConfigurationError(f"stage map file {path}: custom_stages must map name -> int")
    return stage_map, custom
