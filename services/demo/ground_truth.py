"""Expected reports computed from the ground-truth file alone, independently of the pipeline."""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from schemas.channels import CANONICAL_STAGE_ORDER
from services.attributor.models import (
    Conversion,
    JourneyTouch,
    Model,
    ModelSettings,
    all_credits,
    split_amount,
)
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings
from services.demo.reference_models import reference_credits, reference_split
from services.demo.simulator import GroundTruth, TruthDeal, TruthTouchpoint

# Every model but data_driven, whose Markov weights depend on when and over what the
# attributor fitted them; the other eight are functions of the journey alone.
EXACT_MODELS: tuple[Model, ...] = tuple(m for m in Model if m is not Model.DATA_DRIVEN)
LEAD_CREATED = "lead_created"
ZERO_AMOUNT = Decimal("0.00")
STITCH_LOOKBACK = timedelta(days=90)

_K = TypeVar("_K")


def load(path: Path) -> GroundTruth:
    """The ground truth the simulator wrote to ``path``."""
    return GroundTruth.from_json(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class Lead:
    """A lead as the pipeline should see it: its ID, creation time and stitched touchpoints."""

    lead_id: str
    created_at: datetime | None  # first identification; None for a contact only the CRM knows
    touchpoints: tuple[TruthTouchpoint, ...]


@dataclass(frozen=True)
class ExpectedConversion:
    """A moment that gets attributed: a lead's creation or a deal entering a stage."""

    lead_id: str
    kind: str  # LEAD_CREATED or the canonical stage
    occurred_at: datetime
    deal_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    lead_created_at: datetime | None = None
    opportunity_created_at: datetime | None = None


@dataclass(frozen=True)
class CreditRow:
    """One touchpoint's share of one conversion under one model."""

    conversion: ExpectedConversion
    model: Model
    touchpoint: TruthTouchpoint
    credit: Decimal
    amount: Decimal | None  # the touch's cent-exact part of the amount (None without amount)


def stitched_leads(
    truth: GroundTruth, identity: IdentitySettings, lookback: timedelta = STITCH_LOOKBACK
) -> dict[str, str]:
    """touchpoint_id -> lead_id, by DESIGN.md's identity rules applied to the truth file.

    A touchpoint belongs to the lead of the latest identification of its anonymous ID at
    or before it; a touchpoint before the first identification belongs to that first
    lead when it lies within ``lookback`` of it; an anonymous ID never identified gives
    no lead. (The simulator never shares a device, so the shared-device cap never applies.)
    """
    per_anonymous: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
    for ident in truth.identifications:
        lead = lead_id_for_email(ident.email, identity)
        per_anonymous[ident.anonymous_id].append((ident.occurred_at, ident.event_id, lead))
    for sorted_idents in per_anonymous.values():
        sorted_idents.sort()
    result: dict[str, str] = {}
    for touch in truth.touchpoints:
        found = per_anonymous.get(touch.anonymous_id)
        if not found:
            continue
        times = [t for t, _, _ in found]
        index = bisect.bisect_right(times, touch.occurred_at) - 1
        if index >= 0:
            result[touch.touchpoint_id] = found[index][2]
        elif found[0][0] - touch.occurred_at <= lookback:
            result[touch.touchpoint_id] = found[0][2]
    return result


def leads(truth: GroundTruth, identity: IdentitySettings) -> dict[str, Lead]:
    """Every lead (identified on the site, or only known to the CRM) by lead ID."""
    created: dict[str, datetime] = {}
    for ident in truth.identifications:
        lead = lead_id_for_email(ident.email, identity)
        if lead not in created or ident.occurred_at < created[lead]:
            created[lead] = ident.occurred_at
    touches: dict[str, list[TruthTouchpoint]] = defaultdict(list)
    owners = stitched_leads(truth, identity)
    for touch in truth.touchpoints:
        owner = owners.get(touch.touchpoint_id)
        if owner is not None:
            touches[owner].append(touch)
    lead_ids = set(created) | {lead_id_for_email(d.email, identity) for d in truth.deals}
    return {
        lead: Lead(
            lead,
            created.get(lead),
            tuple(sorted(touches[lead], key=lambda t: (t.occurred_at, t.touchpoint_id))),
        )
        for lead in sorted(lead_ids)
    }


def _opportunity_created(deal: TruthDeal) -> datetime | None:
    """When the deal first reached the opportunity stage or later (a loss does not count)."""
    entered = [
        s.occurred_at
        for s in deal.stages
        if CANONICAL_STAGE_ORDER[s.stage] >= CANONICAL_STAGE_ORDER["opportunity"]
        and s.stage != "closed_lost"
    ]
    return min(entered) if entered else None


def _latest_amount(deal: TruthDeal) -> Decimal | None:
    """The deal's latest known amount: the last stage change that carried one."""
    amounts = [s.amount for s in sorted(deal.stages, key=lambda s: s.occurred_at) if s.amount]
    return amounts[-1] if amounts else None


def conversions(truth: GroundTruth, identity: IdentitySettings) -> list[ExpectedConversion]:
    """Lead creations and deal stage changes, by the attributor's conversion rules.

    (As ``services.attributor.journeys.attribute_lead`` documents them; the README of the
    attributor should carry them too.)

    - Lead creation: at the lead's first identification, without amount.
    - Each stage a deal reached is a conversion at the first time it reached it, valued at
      the deal's *latest* amount (an amount change re-values every stage; no amount is 0).
    - Every conversion of a deal knows the lead's creation time and the deal's
      opportunity creation (first stage at or past ``opportunity`` that is not a loss),
      also for stages reached before the opportunity: credits describe the journey as it
      is known now, like the amount.
    """
    by_lead = leads(truth, identity)
    found = [
        ExpectedConversion(lead.lead_id, LEAD_CREATED, lead.created_at, lead_created_at=lead.created_at)
        for lead in by_lead.values()
        if lead.created_at is not None
    ]  # fmt: skip
    for deal in truth.deals:
        lead_id = lead_id_for_email(deal.email, identity)
        amount = _latest_amount(deal)
        opportunity_at = _opportunity_created(deal)
        first_reached: dict[str, datetime] = {}
        for stage in sorted(deal.stages, key=lambda s: s.occurred_at):
            first_reached.setdefault(stage.stage, stage.occurred_at)
        for stage_name, reached_at in first_reached.items():
            found.append(
                ExpectedConversion(
                    lead_id=lead_id,
                    kind=stage_name,
                    occurred_at=reached_at,
                    deal_id=deal.deal_id,
                    amount=amount if amount is not None else ZERO_AMOUNT,
                    currency=deal.currency,
                    lead_created_at=by_lead[lead_id].created_at,
                    opportunity_created_at=opportunity_at,
                )
            )
    return found


def expected_credits(
    truth: GroundTruth,
    identity: IdentitySettings,
    settings: ModelSettings = ModelSettings(),
    models: Sequence[Model] = EXACT_MODELS,
    *,
    engine: str = "reference",
) -> list[CreditRow]:
    """Every conversion's credit per touchpoint per model, with the amount split to the cent.

    ``engine="reference"`` (the default) computes credits with services.demo.reference_models,
    written independently from the model definitions, so a bug in the attributor's models
    shows up as a difference; ``engine="attributor"`` uses services.attributor.models (the
    unit tests check that both agree).
    """
    if engine not in ("reference", "attributor"):
        raise ValueError(f"engine must be 'reference' or 'attributor', got {engine!r}")
    by_lead = leads(truth, identity)
    rows: list[CreditRow] = []
    for conversion in conversions(truth, identity):
        touches = by_lead[conversion.lead_id].touchpoints
        by_id = {t.touchpoint_id: t for t in touches}
        journey = [JourneyTouch(t.touchpoint_id, t.occurred_at, t.channel) for t in touches]
        moment = Conversion(
            conversion.occurred_at, conversion.lead_created_at, conversion.opportunity_created_at
        )
        split: Callable[[Decimal, Mapping[str, Decimal]], dict[str, Decimal]]
        if engine == "attributor":
            per_model = all_credits(journey, moment, settings)
            split = split_amount
        else:
            per_model = {
                model: reference_credits(
                    model, journey, moment, settings.lookback, settings.half_life
                )
                for model in models
            }
            split = reference_split
        for model in models:
            credit = per_model[model]
            if not credit:
                continue
            amounts = split(conversion.amount, credit) if conversion.amount is not None else {}
            for touch_id, share in credit.items():
                rows.append(
                    CreditRow(conversion, model, by_id[touch_id], share, amounts.get(touch_id))
                )
    return rows


@dataclass(frozen=True)
class StageTotal:
    """Deals that reached a stage and the sum of their (latest) amounts."""

    deals: int = 0
    amount: Decimal = Decimal("0.00")


@dataclass(frozen=True)
class ExpectedReports:
    """The closed-loop reports the pipeline must produce for the simulated traffic."""

    # model -> channel symbol -> leads (fractional for multi-touch models)
    leads_by_channel: Mapping[Model, Mapping[str, Decimal]]
    # model -> channel symbol -> closed-won revenue
    revenue_by_channel: Mapping[Model, Mapping[str, Decimal]]
    # model -> (channel symbol, campaign) -> closed-won revenue
    revenue_by_campaign: Mapping[Model, Mapping[tuple[str, str | None], Decimal]]
    # model -> (stage, channel symbol) -> latest deal amounts credited for reaching the stage
    pipeline_by_stage_channel: Mapping[Model, Mapping[tuple[str, str], Decimal]]
    # stage -> deals that reached it and their latest amounts (attributed or not)
    pipeline_by_stage: Mapping[str, StageTotal]
    # stage -> deals currently in it and their current amounts
    current_pipeline: Mapping[str, StageTotal]
    won_revenue: Decimal
    unattributed_won_revenue: Decimal  # won deals whose lead has no eligible touchpoint
    leads: int
    touchpoints: int  # stitched touchpoints


def _group(
    rows: Iterable[CreditRow],
    key: Callable[[CreditRow], _K],
    value: Callable[[CreditRow], Decimal | None],
    models: Sequence[Model],
) -> dict[Model, dict[_K, Decimal]]:
    grouped: dict[Model, dict[_K, Decimal]] = {m: defaultdict(Decimal) for m in models}
    for row in rows:
        amount = value(row)
        if amount is not None:
            grouped[row.model][key(row)] += amount
    return {m: dict(g) for m, g in grouped.items()}


def _channel(row: CreditRow) -> str:
    return row.touchpoint.channel


def _campaign(row: CreditRow) -> tuple[str, str | None]:
    return (row.touchpoint.channel, row.touchpoint.campaign)


def _stage_channel(row: CreditRow) -> tuple[str, str]:
    return (row.conversion.kind, row.touchpoint.channel)


def _credit(row: CreditRow) -> Decimal | None:
    return row.credit


def _amount(row: CreditRow) -> Decimal | None:
    return row.amount


def expected_reports(
    truth: GroundTruth,
    identity: IdentitySettings,
    settings: ModelSettings = ModelSettings(),
    models: Sequence[Model] = EXACT_MODELS,
    *,
    engine: str = "reference",
) -> ExpectedReports:
    """The reports computed from ``truth`` alone (see ``expected_credits`` for ``engine``)."""
    rows = expected_credits(truth, identity, settings, models, engine=engine)
    lead_rows = [r for r in rows if r.conversion.kind == LEAD_CREATED]
    won_rows = [r for r in rows if r.conversion.kind == "closed_won"]
    stage_rows = [r for r in rows if r.conversion.kind != LEAD_CREATED]
    entered: dict[str, StageTotal] = {}
    current: dict[str, StageTotal] = {}
    won = Decimal("0.00")
    for deal in truth.deals:
        amount = _latest_amount(deal) or ZERO_AMOUNT
        for stage_name in {s.stage for s in deal.stages}:
            total = entered.get(stage_name, StageTotal())
            entered[stage_name] = StageTotal(total.deals + 1, total.amount + amount)
        last = max(deal.stages, key=lambda s: s.occurred_at)
        total = current.get(last.stage, StageTotal())
        current[last.stage] = StageTotal(total.deals + 1, total.amount + amount)
        if last.stage == "closed_won":
            won += amount
    attributed_won = {r.conversion.deal_id for r in won_rows}
    unattributed = sum(
        (
            d.stages[-1].amount or Decimal(0)
            for d in truth.deals
            if d.stages[-1].stage == "closed_won" and d.deal_id not in attributed_won
        ),
        Decimal("0.00"),
    )
    all_leads = leads(truth, identity)
    return ExpectedReports(
        leads_by_channel=_group(lead_rows, _channel, _credit, models),
        revenue_by_channel=_group(won_rows, _channel, _amount, models),
        revenue_by_campaign=_group(won_rows, _campaign, _amount, models),
        pipeline_by_stage_channel=_group(stage_rows, _stage_channel, _amount, models),
        pipeline_by_stage=entered,
        current_pipeline=current,
        won_revenue=won,
        unattributed_won_revenue=unattributed,
        leads=sum(1 for lead in all_leads.values() if lead.created_at is not None),
        touchpoints=sum(len(lead.touchpoints) for lead in all_leads.values()),
    )


def format_report(reports: ExpectedReports, model: Model = Model.LINEAR) -> str:
    """A short plain-text closed-loop report of the expected numbers under ``model``."""
    lines = [f"Expected closed-loop report ({model.value})", ""]
    lines.append(f"{'channel':<16}{'leads':>10}{'won revenue':>16}")
    channels = sorted(
        set(reports.leads_by_channel.get(model, {}))
        | set(reports.revenue_by_channel.get(model, {}))
    )
    for channel in channels:
        lead_count = reports.leads_by_channel[model].get(channel, Decimal(0))
        revenue = reports.revenue_by_channel[model].get(channel, Decimal(0))
        lines.append(f"{channel:<16}{lead_count:>10.2f}{revenue:>16,.2f}")
    lines.append("")
    lines.append(f"{'stage':<16}{'deals':>10}{'amount':>16}")
    for stage, total in sorted(reports.pipeline_by_stage.items(), key=lambda kv: _stage_key(kv[0])):
        lines.append(f"{stage:<16}{total.deals:>10}{total.amount:>16,.2f}")
    lines.append("")
    lines.append(
        f"leads {reports.leads}, stitched touchpoints {reports.touchpoints}, "
        f"won revenue {reports.won_revenue:,.2f} (unattributed {reports.unattributed_won_revenue:,.2f})"
    )
    return "\n".join(lines)


def _stage_key(stage: str) -> tuple[int, str]:
    return (CANONICAL_STAGE_ORDER.get(stage, 999), stage)
