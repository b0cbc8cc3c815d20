"""Journeys, deals and the processor's recomputations, with a list sink (no Kafka, no ClickHouse)."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.attributor.adapters.clickhouse import ListSink
from services.attributor.journeys import (
    LEAD_CREATED,
    Attribution,
    Deal,
    DealFact,
    IdentityLinkFact,
    JourneyBook,
    LeadFact,
    RunFact,
    StageEvent,
    Touch,
    channel_name,
)
from services.attributor.models import ModelSettings
from services.attributor.worker import Processor, VersionClock

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LEAD = "lead-a"


def touch(
    tid: str,
    days: float,
    channel: str = "PAID_SEARCH",
    offset: int = 0,
    lead: str = LEAD,
    retracted: bool = False,
    campaign: str = "",
) -> Touch:
    return Touch(
        touchpoint_id=tid,
        lead_id=lead,
        anonymous_id="anon-1",
        site_id="dev",
        occurred_at=T0 + timedelta(days=days),
        channel=channel,
        source="google" if channel == "PAID_SEARCH" else "",
        medium="cpc" if channel == "PAID_SEARCH" else "",
        campaign=campaign,
        term="",
        content="",
        click_ids={},
        referrer_host="",
        landing_page=f"https://example.com/{tid}",
        is_offline=False,
        retracted=retracted,
        partition=0,
        offset=offset,
    )


def stage(
    event_id: str,
    stage_name: str,
    order: int,
    days: float,
    amount: str | None = "1000.00",
    deal: str = "deal-1",
    won: bool = False,
    lost: bool = False,
    offset: int = 0,
) -> StageEvent:
    at = T0 + timedelta(days=days)
    return StageEvent(
        event_id=event_id,
        deal_id=deal,
        lead_id=LEAD,
        crm="generic",
        pipeline="default",
        stage=stage_name,
        stage_order=order,
        crm_stage=stage_name,
        amount=None if amount is None else Decimal(amount),
        currency="EUR" if amount is not None else "",
        is_won=won,
        is_lost=lost,
        occurred_at=at,
        received_at=at,
        deal_name="",
        partition=0,
        offset=offset,
    )


def link(lead: str, days: float, shared: bool = False, anon: str = "anon-1") -> IdentityLinkFact:
    return IdentityLinkFact(anon, lead, T0 + timedelta(days=days), f"ev-{anon}", 1, shared, "dev")


def processor() -> tuple[Processor, ListSink]:
    sink = ListSink()
    clock = itertools.count(1)
    return Processor(sink, ModelSettings(), lambda: next(clock), now=lambda: T0), sink


def latest(sink: ListSink) -> Attribution:
    """What the views show after everything flushed: each subject's newest run and its credits."""
    runs: dict[tuple[str, str], RunFact] = {}
    deals: dict[str, DealFact] = {}
    lead: LeadFact | None = None
    for attribution in sink.attributions:
        for run in attribution.runs:
            runs[(run.lead_id, run.deal_id)] = run
        for deal in attribution.deals:
            deals[deal.deal_id] = deal
        lead = attribution.lead or lead
    current = {(r.lead_id, r.deal_id, r.computed_version) for r in runs.values()}
    credits = [
        c
        for attribution in sink.attributions
        for c in attribution.credits
        if (c.lead_id, c.deal_id, c.computed_version) in current
    ]
    return Attribution(tuple(credits), tuple(runs.values()), lead, tuple(deals.values()))


def credits_by(attr: Attribution, deal: str, stage_name: str, model: str) -> dict[str, Decimal]:
    return {
        c.touchpoint_id: c.credit
        for c in attr.credits
        if c.deal_id == deal and c.stage == stage_name and c.model == model
    }


def amounts_by(attr: Attribution, deal: str, stage_name: str, model: str) -> dict[str, Decimal]:
    return {
        c.touchpoint_id: c.attributed_amount
        for c in attr.credits
        if c.deal_id == deal and c.stage == stage_name and c.model == model
    }


def test_every_stage_reached_is_a_conversion_credited_under_every_model() -> None:
    proc, sink = processor()
    proc.handle_links([link(LEAD, 2)])
    proc.handle(
        [
            touch("t1", 0, "PAID_SEARCH", offset=1),
            touch("t2", 2, "EMAIL", offset=2),
            touch("t3", 4, "DIRECT", offset=3),
            stage("e1", "opportunity", 40, 5, offset=4),
            stage("e2", "proposal", 50, 6, offset=5),
        ]
    )
    proc.flush()
    attr = latest(sink)
    # Linear over 3 touches: 1/3 each, the unit left over to the first touch.
    assert credits_by(attr, "deal-1", "proposal", "linear") == {
        "t1": Decimal("0.333333333334"),
        "t2": Decimal("0.333333333333"),
        "t3": Decimal("0.333333333333"),
    }
    # 1000.00 split 333.34 / 333.33 / 333.33 (the extra cent to the larger credit).
    assert amounts_by(attr, "deal-1", "proposal", "linear") == {
        "t1": Decimal("333.34"),
        "t2": Decimal("333.33"),
        "t3": Decimal("333.33"),
    }
    assert credits_by(attr, "deal-1", "opportunity", "last_non_direct") == {"t2": Decimal(1)}
    # Lead creation at day 2: touches t1 (day 0) and t2 (day 2) are before it.
    assert credits_by(attr, "", LEAD_CREATED, "first_touch") == {"t1": Decimal(1)}
    assert credits_by(attr, "", LEAD_CREATED, "last_touch") == {"t2": Decimal(1)}
    per_conversion: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for c in attr.credits:
        per_conversion[(c.deal_id, c.stage, c.model)] += c.credit
    assert len(per_conversion) == 3 * 9
    assert set(per_conversion.values()) == {Decimal(1)}
    assert {(r.deal_id, r.credit_rows > 0) for r in attr.runs} == {("", True), ("deal-1", True)}
    assert attr.lead.channel == "Email" and attr.lead.first_touch_channel == "Paid Search"
    assert attr.deals[0].status == "open" and attr.deals[0].stage == "proposal"
    assert {c.computed_version for c in attr.credits} == {attr.runs[0].computed_version}


def test_w_shaped_uses_lead_and_opportunity_creation() -> None:
    proc, sink = processor()
    proc.handle_links([link(LEAD, 1)])
    proc.handle(
        [
            touch("t0", 0, offset=1),
            touch("t1", 1, offset=2),
            touch("t2", 2, offset=3),
            touch("t3", 3, offset=4),
            touch("t4", 4, offset=5),
            stage("e1", "opportunity", 40, 3),
            stage("e2", "closed_won", 70, 5, won=True),
        ]
    )
    proc.flush()
    # First t0, lead creation at t1, opportunity at t3: 30/30/30, 5 % each to t2, t4.
    assert credits_by(latest(sink), "deal-1", "closed_won", "w_shaped") == {
        "t0": Decimal("0.3"),
        "t1": Decimal("0.3"),
        "t2": Decimal("0.05"),
        "t3": Decimal("0.3"),
        "t4": Decimal("0.05"),
    }


def test_late_touchpoint_recomputes_the_deal_with_a_newer_version() -> None:
    proc, sink = processor()
    proc.handle([touch("t2", 2, "EMAIL", offset=1), stage("e1", "proposal", 50, 5, offset=2)])
    proc.flush()
    first = latest(sink)
    assert credits_by(first, "deal-1", "proposal", "first_touch") == {"t2": Decimal(1)}
    proc.handle([touch("t1", 1, "PAID_SEARCH", offset=3)])
    proc.flush()
    second = latest(sink)
    assert credits_by(second, "deal-1", "proposal", "first_touch") == {"t1": Decimal(1)}
    assert credits_by(second, "deal-1", "proposal", "linear") == {
        "t1": Decimal("0.5"),
        "t2": Decimal("0.5"),
    }
    assert second.runs[0].computed_version > first.runs[0].computed_version


def test_touch_after_the_conversion_earns_nothing_but_still_recomputes() -> None:
    proc, sink = processor()
    proc.handle([touch("t1", 1, offset=1), stage("e1", "proposal", 50, 5, offset=2)])
    proc.flush()
    proc.handle([touch("t9", 9, "EMAIL", offset=3)])
    proc.flush()
    assert len(sink.attributions) == 2
    assert credits_by(latest(sink), "deal-1", "proposal", "last_touch") == {"t1": Decimal(1)}


def test_retracted_touchpoint_leaves_the_journey() -> None:
    proc, sink = processor()
    proc.handle(
        [
            touch("t1", 1, "PAID_SEARCH", offset=1),
            touch("t2", 2, "EMAIL", offset=2),
            stage("e1", "proposal", 50, 5, offset=3),
        ]
    )
    proc.flush()
    proc.handle([touch("t2", 2, "EMAIL", offset=4, retracted=True)])
    proc.flush()
    attr = latest(sink)
    assert credits_by(attr, "deal-1", "proposal", "linear") == {"t1": Decimal(1)}
    assert attr.lead.touchpoints == 1


def test_retraction_of_every_touch_still_writes_a_run_that_supersedes_old_credits() -> None:
    proc, sink = processor()
    proc.handle([touch("t1", 1, offset=1), stage("e1", "proposal", 50, 5, offset=2)])
    proc.flush()
    proc.handle([touch("t1", 1, offset=3, retracted=True)])
    proc.flush()
    attr = latest(sink)
    assert attr.credits == ()
    deal_run = next(r for r in attr.runs if r.deal_id == "deal-1")
    assert deal_run.credit_rows == 0
    assert deal_run.computed_version > sink.attributions[0].runs[0].computed_version


def test_older_copy_of_a_touch_never_replaces_a_newer_one() -> None:
    book = JourneyBook()
    book.add_touch(touch("t1", 1, offset=5, retracted=True))
    book.add_touch(touch("t1", 1, offset=3))  # redelivered older copy
    assert book.leads[LEAD].journey() == []


def test_amount_change_revalues_every_stage() -> None:
    proc, sink = processor()
    proc.handle(
        [
            touch("t1", 1, offset=1),
            touch("t2", 2, "EMAIL", offset=2),
            stage("e1", "opportunity", 40, 3, amount="1000.00"),
            stage("e2", "proposal", 50, 4, amount="1000.00"),
        ]
    )
    proc.flush()
    proc.handle([stage("e3", "proposal", 50, 6, amount="2500.00")])
    proc.flush()
    attr = latest(sink)
    for stage_name in ("opportunity", "proposal"):
        assert amounts_by(attr, "deal-1", stage_name, "linear") == {
            "t1": Decimal("1250.00"),
            "t2": Decimal("1250.00"),
        }
    assert attr.deals[0].amount == Decimal("2500.00")


def test_lost_deal_marks_every_credit_lost() -> None:
    proc, sink = processor()
    proc.handle([touch("t1", 1, offset=1), stage("e1", "proposal", 50, 3)])
    proc.flush()
    assert {c.deal_status for c in latest(sink).credits if c.deal_id} == {"open"}
    proc.handle([stage("e2", "closed_lost", 70, 6, lost=True)])
    proc.flush()
    attr = latest(sink)
    assert {c.deal_status for c in attr.credits if c.deal_id} == {"lost"}
    assert {c.stage for c in attr.credits if c.deal_id} == {"proposal", "closed_lost"}
    assert attr.deals[0].status == "lost" and attr.deals[0].closed_at == T0 + timedelta(days=6)


def test_redelivered_stage_event_changes_nothing() -> None:
    proc, sink = processor()
    proc.handle([touch("t1", 1, offset=1), stage("e1", "proposal", 50, 3)])
    proc.flush()
    proc.handle([stage("e1", "proposal", 50, 3)])
    proc.flush()
    a, b = sink.attributions
    assert [c._replace(computed_version=0) for c in a.credits] == [
        c._replace(computed_version=0) for c in b.credits
    ]


def test_deal_state_does_not_depend_on_event_order() -> None:
    events = [
        stage("e1", "lead", 10, 1, amount=None),
        stage("e2", "opportunity", 40, 2, amount="500.00"),
        stage("e3", "proposal", 50, 3, amount="800.00"),
        stage("e4", "closed_won", 70, 4, amount="750.00", won=True),
    ]
    expected = Deal.of(events)
    assert expected.amount == Decimal("750.00") and expected.status == "won"
    assert expected.opportunity_created_at == T0 + timedelta(days=2)
    assert [s for s, _, _ in expected.reached] == ["lead", "opportunity", "proposal", "closed_won"]
    rng = random.Random(7)
    for _ in range(10):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert Deal.of(shuffled) == expected


def test_final_credits_do_not_depend_on_arrival_order() -> None:
    inputs: list[Touch | StageEvent] = [
        touch("t1", 0, "PAID_SEARCH", offset=1),
        touch("t2", 1, "EMAIL", offset=2),
        touch("t3", 2, "ORGANIC_SEARCH", offset=3),
        touch("t2", 1, "EMAIL", offset=4, retracted=True),
        stage("e1", "opportunity", 40, 3, offset=10),
        stage("e2", "closed_won", 70, 5, won=True, offset=11),
    ]

    def final(records: list[Touch | StageEvent], links_first: bool) -> list[tuple[object, ...]]:
        proc, sink = processor()
        if links_first:
            proc.handle_links([link(LEAD, 1)])
        for record in records:
            proc.handle([record])
            proc.flush()
        if not links_first:
            proc.handle_links([link(LEAD, 1)])
            proc.flush()
        return sorted(
            (c.deal_id, c.stage, c.model, c.touchpoint_id, c.credit, c.attributed_amount)
            for c in latest(sink).credits
        )

    baseline = final(inputs, True)
    rng = random.Random(3)
    for i in range(8):
        shuffled = inputs[:]
        rng.shuffle(shuffled)
        assert final(shuffled, links_first=bool(i % 2)) == baseline


def test_lead_creation_is_the_earliest_unshared_identification() -> None:
    book = JourneyBook()
    book.add_touch(touch("t1", 0, offset=1))
    book.dirty.clear()
    assert book.add_link(link(LEAD, 5)) is True
    assert LEAD in book.dirty
    assert book.add_link(link(LEAD, 7, anon="anon-2")) is False
    assert book.add_link(link(LEAD, 1, shared=True, anon="anon-3")) is False
    assert book.created_at[LEAD] == T0 + timedelta(days=5)


def test_restore_keeps_an_earlier_written_creation_and_reconciles_the_rest() -> None:
    book = JourneyBook()
    book.add_link(link(LEAD, 5))
    book.add_link(link("lead-b", 3, anon="anon-b"))
    # lead-a was attributed with day 2 (its first link was compacted away since).
    book.restore_lead(LEAD, 0, T0 + timedelta(days=2))
    book.restore_lead("lead-b", 0, T0 + timedelta(days=3))
    book.restore_lead("lead-c", 0, None)
    book.add_link(link("lead-c", 1, anon="anon-c"))
    assert book.created_at[LEAD] == T0 + timedelta(days=2)
    assert book.reconcile() == {"lead-c"}


def test_links_of_leads_in_other_partitions_only_update_creation_times() -> None:
    proc, sink = processor()
    proc.handle_links([link("lead-elsewhere", 1)])
    proc.flush()
    assert sink.attributions == [] and len(sink.links) == 1


def test_drop_partitions_forgets_their_leads() -> None:
    book = JourneyBook()
    book.add_touch(touch("t1", 0, offset=1))
    book.add_touch(replace(touch("t2", 0, offset=1, lead="lead-p3"), partition=3))
    book.drop_partitions({3})
    assert set(book.leads) == {LEAD} and book.dirty == {LEAD}


def test_version_clock_is_strictly_increasing_even_when_time_goes_back() -> None:
    times = iter([100, 50, 50, 200, 300])
    clock = VersionClock(floor=120, now=lambda: next(times))
    assert [clock(), clock(), clock(), clock()] == [121, 122, 123, 200]
    clock.raise_floor(500)
    clock.raise_floor(10)
    assert clock() == 501


@pytest.mark.parametrize(
    ("symbol", "name"), [("PAID_SEARCH", "Paid Search"), ("DIRECT", "Direct"), ("NOPE", "Other")]
)
def test_channel_names(symbol: str, name: str) -> None:
    assert channel_name(symbol) == name


def test_a_stage_event_recomputes_only_its_deal() -> None:
    proc, sink = processor()
    proc.handle_links([link(LEAD, 1)])
    proc.handle(
        [
            touch("t1", 0, offset=1),
            stage("e1", "proposal", 50, 3, deal="deal-1"),
            stage("e2", "proposal", 50, 3, deal="deal-2"),
        ]
    )
    proc.flush()
    proc.handle([stage("e3", "closed_won", 70, 5, deal="deal-2", won=True)])
    proc.flush()
    second = sink.attributions[-1]
    assert [r.deal_id for r in second.runs] == ["deal-2"]
    assert second.lead is None and [d.deal_id for d in second.deals] == ["deal-2"]
    assert {c.deal_id for c in second.credits} == {"deal-2"}
    # A touch changes every conversion of the lead again.
    proc.handle([touch("t2", 2, "EMAIL", offset=2)])
    proc.flush()
    assert {r.deal_id for r in sink.attributions[-1].runs} == {"", "deal-1", "deal-2"}
