"""Per-lead journeys, deals and creation times, and the facts one attribution of a lead produces."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from schemas.channels import CANONICAL_STAGE_ORDER, Channel
from services.attributor.models import (
    Conversion,
    JourneyTouch,
    Model,
    ModelSettings,
    all_credits,
    eligible_touches,
    split_amount,
)

LEAD_CREATED = "lead_created"
NO_DEAL = ""
ZERO_AMOUNT = Decimal("0.00")
_OPPORTUNITY_ORDER = CANONICAL_STAGE_ORDER["opportunity"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_CHANNEL_NAMES = {channel.name: channel.value for channel in Channel}
_OTHER = Channel.OTHER.value


def channel_name(symbol: str) -> str:
    """The display name of a Channel Avro symbol (``PAID_SEARCH`` -> ``Paid Search``); unknown -> Other."""
    return _CHANNEL_NAMES.get(symbol, _OTHER)


@dataclass(frozen=True)
class Touch:
    """A touchpoints.stitched record as received, with where it was read (partition, offset)."""

    touchpoint_id: str
    lead_id: str
    anonymous_id: str
    site_id: str
    occurred_at: datetime
    channel: str  # Avro symbol
    source: str
    medium: str
    campaign: str
    term: str
    content: str
    click_ids: Mapping[str, str]
    referrer_host: str
    landing_page: str
    is_offline: bool
    retracted: bool
    partition: int
    offset: int


@dataclass(frozen=True)
class StageEvent:
    """A crm.deal_stages record as received, with where it was read."""

    event_id: str
    deal_id: str
    lead_id: str
    crm: str
    pipeline: str
    stage: str
    stage_order: int
    crm_stage: str
    amount: Decimal | None
    currency: str
    is_won: bool
    is_lost: bool
    occurred_at: datetime
    received_at: datetime
    deal_name: str
    partition: int
    offset: int

    @property
    def order(self) -> tuple[datetime, datetime, str]:
        """CRM time, then receipt, then ID: a total order independent of arrival."""
        return (self.occurred_at, self.received_at, self.event_id)


@dataclass(frozen=True)
class IdentityLinkFact:
    """An identity.links record: the anonymous ID belongs to the lead from ``valid_from`` on."""

    anonymous_id: str
    lead_id: str
    valid_from: datetime
    identified_by: str
    link_count: int
    shared: bool
    site_id: str


@dataclass
class LeadState:
    """What the attributor knows of one lead: every touch (newest copy by offset) and deal event."""

    lead_id: str
    partition: int
    touches: dict[str, Touch] = field(default_factory=dict)
    deal_events: dict[str, dict[str, StageEvent]] = field(default_factory=dict)
    # The creation time the last written attribution used (from the leads table on restore).
    attributed_created_at: datetime | None = None
    # What the next attribution must recompute: everything (the journey or creation time
    # changed) or only some deals (their stage events arrived).
    journey_dirty: bool = False
    dirty_deals: set[str] = field(default_factory=set)

    def add_touch(self, touch: Touch) -> bool:
        """Keep ``touch`` unless a copy from a later offset is already here; True when kept."""
        kept = self.touches.get(touch.touchpoint_id)
        if kept is not None and kept.offset >= touch.offset:
            return False
        self.touches[touch.touchpoint_id] = touch
        return True

    def add_stage_event(self, event: StageEvent) -> bool:
        """Add a deal-stage event; a redelivered event_id changes nothing. True when new."""
        events = self.deal_events.setdefault(event.deal_id, {})
        if event.event_id in events:
            return False
        events[event.event_id] = event
        return True

    def journey(self) -> list[Touch]:
        """The touches that belong to the lead now (retracted ones dropped), in journey order."""
        live = [t for t in self.touches.values() if not t.retracted]
        live.sort(key=lambda t: (t.occurred_at, t.touchpoint_id))
        return live


@dataclass(frozen=True)
class Deal:
    """A deal's state derived from its stage events (a pure function of the set of events)."""

    deal_id: str
    lead_id: str
    crm: str
    pipeline: str
    deal_name: str
    stage: str
    stage_order: int
    status: str  # open | won | lost
    amount: Decimal | None
    currency: str
    created_at: datetime
    opportunity_created_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    reached: tuple[tuple[str, int, datetime], ...]  # (stage, stage_order, first time reached)

    @classmethod
    def of(cls, events: Iterable[StageEvent]) -> Deal:
        """The deal after ``events`` (at least one), whatever order they arrived in."""
        ordered = sorted(events, key=lambda e: e.order)
        first, last = ordered[0], ordered[-1]
        amount: Decimal | None = None
        currency = ""
        reached: dict[str, tuple[int, datetime]] = {}
        opportunity_at: datetime | None = None
        deal_name = ""
        for event in ordered:
            if event.amount is not None:
                amount, currency = event.amount, event.currency
            if event.deal_name:
                deal_name = event.deal_name
            if event.stage not in reached:
                reached[event.stage] = (event.stage_order, event.occurred_at)
            if (
                opportunity_at is None
                and event.stage_order >= _OPPORTUNITY_ORDER
                and not event.is_lost
            ):
                opportunity_at = event.occurred_at
        status = "won" if last.is_won else "lost" if last.is_lost else "open"
        return cls(
            deal_id=first.deal_id,
            lead_id=first.lead_id,
            crm=last.crm,
            pipeline=last.pipeline,
            deal_name=deal_name,
            stage=last.stage,
            stage_order=last.stage_order,
            status=status,
            amount=amount,
            currency=currency,
            created_at=first.occurred_at,
            opportunity_created_at=opportunity_at,
            closed_at=last.occurred_at if status != "open" else None,
            updated_at=last.occurred_at,
            reached=tuple(
                (stage, order, at)
                for stage, (order, at) in sorted(reached.items(), key=lambda kv: (kv[1][1], kv[0]))
            ),
        )


# --------------------------------------------------------------------------- facts


class CreditFact(NamedTuple):
    """One row of attribution_credits (field order = column order).

    A NamedTuple, not a frozen dataclass: a 100-touch journey yields ~900 of these per
    conversion, and a tuple is built several times faster and is already the row.
    """

    lead_id: str
    deal_id: str
    stage: str
    stage_order: int
    converted_at: datetime
    model: str
    touchpoint_id: str
    touchpoint_at: datetime
    channel: str
    source: str
    medium: str
    campaign: str
    term: str
    content: str
    landing_page: str
    credit: Decimal
    attributed_amount: Decimal
    currency: str
    deal_status: str
    computed_version: int
    computed_at: datetime


@dataclass(frozen=True)
class RunFact:
    """One row of attribution_runs: this computation is the current one for (lead, deal)."""

    lead_id: str
    deal_id: str
    computed_version: int
    computed_at: datetime
    touchpoints: int
    credit_rows: int


@dataclass(frozen=True)
class LeadFact:
    """One row of leads."""

    lead_id: str
    created_at: datetime | None
    channel: str
    source: str
    medium: str
    campaign: str
    landing_page: str
    first_touch_channel: str
    touchpoints: int
    kafka_partition: int
    version: int


@dataclass(frozen=True)
class DealFact:
    """One row of deals (latest state)."""

    lead_id: str
    deal_id: str
    crm: str
    pipeline: str
    deal_name: str
    stage: str
    stage_order: int
    status: str
    amount: Decimal | None
    currency: str
    created_at: datetime
    opportunity_created_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    kafka_partition: int
    version: int


@dataclass(frozen=True)
class Attribution:
    """Everything one computation of a lead writes: credits first, runs last."""

    credits: tuple[CreditFact, ...]
    runs: tuple[RunFact, ...]
    lead: LeadFact | None  # None when only some deals were recomputed
    deals: tuple[DealFact, ...]


def attribute_lead(
    state: LeadState,
    created_at: datetime | None,
    settings: ModelSettings,
    version: int,
    computed_at: datetime,
    only_deals: Collection[str] | None = None,
) -> Attribution:
    """Credits of every conversion of the lead (its creation, every stage every deal reached) under every model.

    With ``only_deals`` just those deals are recomputed (nothing else they depend on
    changed): the lead's creation and its other deals keep their current runs.

    Each deal stage is a conversion at the first time the deal reached it, credited with
    the deal's latest amount (so an amount change re-values every stage); lead creation
    is a conversion at ``created_at`` with amount 0. One run row per deal and one for the
    lead's creation make this computation the current one, even when it has no credits.
    """
    journey = state.journey()
    by_id = {t.touchpoint_id: t for t in journey}
    touches = [JourneyTouch(t.touchpoint_id, t.occurred_at, t.channel) for t in journey]
    credit_rows: list[CreditFact] = []
    runs: list[RunFact] = []
    deal_facts: list[DealFact] = []

    def conversion_rows(
        deal_id: str,
        stage: str,
        stage_order: int,
        conversion: Conversion,
        amount: Decimal | None,
        currency: str,
        status: str,
    ) -> list[CreditFact]:
        per_model = all_credits(touches, conversion, settings)
        rows: list[CreditFact] = []
        for model in Model:
            model_credits = per_model[model]
            if not model_credits:
                continue
            amounts = split_amount(amount if amount is not None else ZERO_AMOUNT, model_credits)
            for touchpoint_id, credit in model_credits.items():
                touch = by_id[touchpoint_id]
                rows.append(
                    CreditFact(
                        lead_id=state.lead_id,
                        deal_id=deal_id,
                        stage=stage,
                        stage_order=stage_order,
                        converted_at=conversion.occurred_at,
                        model=model.value,
                        touchpoint_id=touchpoint_id,
                        touchpoint_at=touch.occurred_at,
                        channel=channel_name(touch.channel),
                        source=touch.source,
                        medium=touch.medium,
                        campaign=touch.campaign,
                        term=touch.term,
                        content=touch.content,
                        landing_page=touch.landing_page,
                        credit=credit,
                        attributed_amount=amounts[touchpoint_id],
                        currency=currency,
                        deal_status=status,
                        computed_version=version,
                        computed_at=computed_at,
                    )
                )
        return rows

    everything = only_deals is None
    lead_rows: list[CreditFact] = []
    if everything and created_at is not None:
        lead_rows = conversion_rows(
            NO_DEAL,
            LEAD_CREATED,
            0,
            Conversion(occurred_at=created_at, lead_created_at=created_at),
            None,
            "",
            "",
        )
    credit_rows += lead_rows
    if everything:
        runs.append(
            RunFact(state.lead_id, NO_DEAL, version, computed_at, len(journey), len(lead_rows))
        )

    for deal_id in sorted(state.deal_events):
        if only_deals is not None and deal_id not in only_deals:
            continue
        deal = Deal.of(state.deal_events[deal_id].values())
        deal_rows: list[CreditFact] = []
        for stage, stage_order, reached_at in deal.reached:
            conversion = Conversion(
                occurred_at=reached_at,
                lead_created_at=created_at,
                opportunity_created_at=deal.opportunity_created_at,
            )
            deal_rows += conversion_rows(
                deal_id, stage, stage_order, conversion, deal.amount, deal.currency, deal.status
            )
        credit_rows += deal_rows
        runs.append(
            RunFact(state.lead_id, deal_id, version, computed_at, len(journey), len(deal_rows))
        )
        deal_facts.append(
            DealFact(
                lead_id=state.lead_id,
                deal_id=deal_id,
                crm=deal.crm,
                pipeline=deal.pipeline,
                deal_name=deal.deal_name,
                stage=deal.stage,
                stage_order=deal.stage_order,
                status=deal.status,
                amount=deal.amount,
                currency=deal.currency,
                created_at=deal.created_at,
                opportunity_created_at=deal.opportunity_created_at,
                closed_at=deal.closed_at,
                updated_at=deal.updated_at,
                kafka_partition=state.partition,
                version=version,
            )
        )

    if not everything:
        return Attribution(tuple(credit_rows), tuple(runs), None, tuple(deal_facts))
    lead_touch: Touch | None = None
    if created_at is not None:
        eligible = eligible_touches(touches, Conversion(occurred_at=created_at), settings.lookback)
        if eligible:
            lead_touch = by_id[eligible[-1].touchpoint_id]
    lead = LeadFact(
        lead_id=state.lead_id,
        created_at=created_at,
        channel=channel_name(lead_touch.channel) if lead_touch else "",
        source=lead_touch.source if lead_touch else "",
        medium=lead_touch.medium if lead_touch else "",
        campaign=lead_touch.campaign if lead_touch else "",
        landing_page=lead_touch.landing_page if lead_touch else "",
        first_touch_channel=channel_name(journey[0].channel) if journey else "",
        touchpoints=len(journey),
        kafka_partition=state.partition,
        version=version,
    )
    return Attribution(tuple(credit_rows), tuple(runs), lead, tuple(deal_facts))


# --------------------------------------------------------------------------- the book


class JourneyBook:
    """Every lead of the partitions this worker owns, the global lead creation times, and what changed.

    ``created_at`` comes from identity.links (all partitions, read by every worker): a
    lead is created at its earliest identification. A lead is *dirty* when something
    that changes its attribution arrived; the worker attributes dirty leads before it
    flushes.
    """

    def __init__(self) -> None:
        self.leads: dict[str, LeadState] = {}
        self.created_at: dict[str, datetime] = {}
        self.dirty: set[str] = set()

    def lead(self, lead_id: str, partition: int) -> LeadState:
        """The lead's state, created empty on first sight."""
        state = self.leads.get(lead_id)
        if state is None:
            state = self.leads[lead_id] = LeadState(lead_id, partition)
        return state

    def add_touch(self, touch: Touch) -> None:
        """Apply a touchpoint (or its retraction) and mark the whole lead dirty."""
        state = self.lead(touch.lead_id, touch.partition)
        state.add_touch(touch)
        state.journey_dirty = True
        self.dirty.add(touch.lead_id)

    def add_stage_event(self, event: StageEvent) -> None:
        """Apply a deal-stage event and mark its deal dirty (a redelivery recomputes harmlessly)."""
        state = self.lead(event.lead_id, event.partition)
        state.add_stage_event(event)
        state.dirty_deals.add(event.deal_id)
        self.dirty.add(event.lead_id)

    def add_link(self, link: IdentityLinkFact) -> bool:
        """Record an identification; True when it moved the lead's creation time earlier."""
        if link.shared:
            return False
        known = self.created_at.get(link.lead_id)
        if known is not None and known <= link.valid_from:
            return False
        self.created_at[link.lead_id] = link.valid_from
        state = self.leads.get(link.lead_id)
        if state is not None and state.attributed_created_at != link.valid_from:
            state.journey_dirty = True
            self.dirty.add(link.lead_id)
        return True

    def restore_lead(self, lead_id: str, partition: int, created_at: datetime | None) -> None:
        """Remember the creation time the last written attribution of the lead used."""
        state = self.lead(lead_id, partition)
        state.attributed_created_at = created_at
        if created_at is not None:
            known = self.created_at.get(lead_id)
            if known is None or created_at < known:
                # Compaction may have dropped the earliest link; the written time stands.
                self.created_at[lead_id] = created_at

    def reconcile(self) -> set[str]:
        """Mark dirty every lead whose creation time differs from the one last attributed."""
        for lead_id, state in self.leads.items():
            if self.created_at.get(lead_id) != state.attributed_created_at:
                state.journey_dirty = True
                self.dirty.add(lead_id)
        return set(self.dirty)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the leads of partitions this worker no longer owns."""
        gone = set(partitions)
        for lead_id in [k for k, s in self.leads.items() if s.partition in gone]:
            del self.leads[lead_id]
            self.dirty.discard(lead_id)

    def attribute_dirty(
        self, settings: ModelSettings, next_version: Any, computed_at: datetime
    ) -> list[Attribution]:
        """Attribute every dirty lead (``next_version()`` gives each its version) and clear the marks."""
        results: list[Attribution] = []
        for lead_id in sorted(self.dirty):
            state = self.leads.get(lead_id)
            if state is None:
                continue
            created = self.created_at.get(lead_id)
            only = None if state.journey_dirty else set(state.dirty_deals)
            results.append(
                attribute_lead(state, created, settings, next_version(), computed_at, only)
            )
            if only is None:
                state.attributed_created_at = created
            state.journey_dirty = False
            state.dirty_deals.clear()
        self.dirty.clear()
        return results


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // _MS


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH
