"""DealChange -> DealStageChanged record: stage mapping, lead ID, amount and currency rules."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.common.leads import InvalidEmailError, lead_id_for_email
from services.common.settings import IdentitySettings
from services.crm_ingest.crms.base import DealChange
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.stages import StageMap


@dataclass(frozen=True)
class DealDetails:
    """What a CRM API lookup tells about a deal; fills only what the webhook lacked."""

    email: str | None = None
    crm_stage: str | None = None
    pipeline: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    deal_name: str | None = None


def complete(change: DealChange, details: DealDetails) -> DealChange:
    """The change with its missing values taken from a lookup (the webhook's own values win)."""
    return replace(
        change,
        email=change.email or details.email,
        crm_stage=change.crm_stage or details.crm_stage,
        pipeline=change.pipeline or details.pipeline,
        amount=change.amount if change.amount is not None else details.amount,
        currency=change.currency or details.currency,
        deal_name=change.deal_name or details.deal_name,
    )


def deal_stage_changed(
    crm: str,
    change: DealChange,
    stages: StageMap,
    identity: IdentitySettings,
    received_at: datetime,
    default_currency: str,
) -> dict[str, Any]:
    """The closedloop.DealStageChanged record of a change; PayloadError names what is unusable."""
    if not change.email:
        raise PayloadError(
            "email",
            "no contact e-mail in the payload and none found by a CRM API lookup",
            "missing_email",
        )
    try:
        lead_id = lead_id_for_email(change.email, identity)
    except InvalidEmailError as exc:
        raise PayloadError("email", "is not an e-mail address", "invalid_email") from exc
    pipeline = change.pipeline or "default"
    stage = stages.resolve(
        crm, pipeline, change.crm_stage, is_won=change.is_won, is_lost=change.is_lost
    )
    code = change.currency
    if change.amount is not None and code is None:
        code = default_currency.upper()
    return {
        "event_id": change.event_id,
        "crm": crm,
        "deal_id": change.deal_id,
        "lead_id": lead_id,
        "pipeline": pipeline,
        "stage": stage.name,
        "stage_order": stage.order,
        "crm_stage": change.crm_stage or stage.name,
        "amount": change.amount,
        "currency": code if change.amount is not None else None,
        "is_won": stage.is_won,
        "is_lost": stage.is_lost,
        "occurred_at": change.occurred_at,
        "received_at": received_at,
        "deal_name": change.deal_name,
    }
