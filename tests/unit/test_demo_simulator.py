"""The demo simulator: determinism, sane distributions, and a ground truth the stitcher's rules agree with."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from schemas.channels import CANONICAL_STAGE_ORDER, Channel
from services.common.errors import ConfigurationError
from services.common.settings import IdentitySettings
from services.demo.ground_truth import stitched_leads
from services.demo.simulator import (
    BOT_AGENTS,
    GroundTruth,
    Simulation,
    SimulationConfig,
    default_end,
    iter_slices,
    simulate,
)
from services.stitcher.channels import ChannelRules, TrafficSource, classify
from services.stitcher.identity import Identification, observe, stitch
from services.stitcher.sessions import sessionize, touchpoint_id

END = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(SimulationConfig(end=END, seed=7, visitors=2500, crms=("generic", "hubspot")))


def _record(event: dict[str, Any], bot: bool) -> dict[str, Any]:
    """The TrackingEvent record the collector would publish for a beacon (the fields observe reads)."""
    occurred = datetime.fromisoformat(event["timestamp"])
    return {
        "event_id": event["event_id"],
        "type": event["type"],
        "site_id": "dev",
        "anonymous_id": event["anonymous_id"],
        "occurred_at": int(occurred.timestamp() * 1000),
        "url": event.get("url"),
        "referrer": event.get("referrer"),
        "utm_source": event.get("utm_source"),
        "utm_medium": event.get("utm_medium"),
        "utm_campaign": event.get("utm_campaign"),
        "utm_term": event.get("utm_term"),
        "utm_content": event.get("utm_content"),
        "click_ids": {},
        "email": event.get("email"),
        "is_bot": bot,
    }


def test_the_same_seed_gives_the_same_traffic_and_truth() -> None:
    config = SimulationConfig(end=END, seed=3, visitors=300)
    first, second = simulate(config), simulate(config)
    assert first.truth == second.truth
    assert [b.event for b in first.beacons] == [b.event for b in second.beacons]
    assert first.stage_changes == second.stage_changes
    other = simulate(SimulationConfig(end=END, seed=4, visitors=300))
    assert other.truth.touchpoints != first.truth.touchpoints


def test_a_visitor_is_the_same_whatever_the_size() -> None:
    small = simulate(SimulationConfig(end=END, seed=3, visitors=120)).truth
    large = simulate(SimulationConfig(end=END, seed=3, visitors=400)).truth
    assert small.people == large.people[:120]
    in_small = {t.touchpoint_id for t in small.touchpoints}
    assert in_small == {t.touchpoint_id for t in large.touchpoints if t.person < 120}


def test_ground_truth_survives_a_json_round_trip(simulation: Simulation) -> None:
    text = json.dumps(simulation.truth.to_json())
    assert GroundTruth.from_json(json.loads(text)) == simulation.truth


def test_every_landing_is_classified_as_the_truth_says(simulation: Simulation) -> None:
    events = {b.event["event_id"]: b.event for b in simulation.beacons}
    rules = ChannelRules.default()
    for touch in simulation.truth.touchpoints:
        event = events[touch.first_event_id]
        got = classify(
            TrafficSource(
                landing_url=event.get("url"),
                referrer=event.get("referrer"),
                utm_source=event.get("utm_source"),
                utm_medium=event.get("utm_medium"),
                utm_campaign=event.get("utm_campaign"),
                utm_term=event.get("utm_term"),
                utm_content=event.get("utm_content"),
                is_offline=event["type"] == "offline_touch",
            ),
            rules,
        )
        assert (
            got.channel.name,
            got.source,
            got.medium,
            got.campaign,
            got.term,
            got.content,
            got.landing_page,
        ) == (
            touch.channel,
            touch.source,
            touch.medium,
            touch.campaign,
            touch.term,
            touch.content,
            touch.landing_page,
        ), touch.kind


def test_the_stitchers_pure_core_finds_exactly_the_truths_touchpoints_and_leads(
    simulation: Simulation,
) -> None:
    identity = IdentitySettings()
    rules = ChannelRules.default()
    hits: dict[str, list[Any]] = defaultdict(list)
    idents: dict[str, list[Identification]] = defaultdict(list)
    for beacon in simulation.beacons:
        observation = observe(_record(dict(beacon.event), beacon.bot), rules, identity)
        anonymous_id = beacon.event["anonymous_id"]
        if observation.hit is not None:
            hits[anonymous_id].append(observation.hit)
        if observation.identification is not None:
            idents[anonymous_id].append(observation.identification)
    stitched: dict[str, str] = {}
    for anonymous_id in hits.keys() | idents.keys():
        for tid, touch in stitch(anonymous_id, hits[anonymous_id], idents[anonymous_id]).items():
            stitched[tid] = touch.lead_id
    expected = stitched_leads(simulation.truth, identity)
    assert stitched == expected
    # and the truth's touchpoints are exactly the sessions the stitcher sees
    sessions = {
        touchpoint_id(anonymous_id, session.first.event_id)
        for anonymous_id, anonymous_hits in hits.items()
        for session in sessionize(anonymous_hits)
    }
    assert sessions == {t.touchpoint_id for t in simulation.truth.touchpoints}


def test_traffic_is_in_the_past_in_whole_seconds_and_in_time_order(simulation: Simulation) -> None:
    config = simulation.config
    times = [b.at for b in simulation.beacons]
    assert times == sorted(times)
    assert all(config.start <= t < config.end and t.microsecond == 0 for t in times)
    changes = [c.at for c in simulation.stage_changes]
    assert changes == sorted(changes)
    assert all(t < config.end for t in changes)
    for beacon in simulation.beacons:
        assert datetime.fromisoformat(beacon.event["timestamp"]) == beacon.at
        assert "sent_at" not in beacon.event


def test_sessions_of_one_browser_are_far_more_than_30_minutes_apart(simulation: Simulation) -> None:
    starts: dict[str, list[datetime]] = defaultdict(list)
    for touch in simulation.truth.touchpoints:
        if not touch.is_offline:
            starts[touch.anonymous_id].append(touch.occurred_at)
    events_by_anonymous: dict[str, list[datetime]] = defaultdict(list)
    for beacon in simulation.beacons:
        events_by_anonymous[beacon.event["anonymous_id"]].append(beacon.at)
    for anonymous_id, session_starts in starts.items():
        session_starts.sort()
        for earlier, later in zip(session_starts, session_starts[1:], strict=False):
            last_before = max(t for t in events_by_anonymous[anonymous_id] if t < later)
            assert later - last_before > timedelta(hours=1)
            assert later > earlier


def test_channel_mix_funnel_and_amounts_are_plausible(simulation: Simulation) -> None:
    truth = simulation.truth
    humans = [p for p in truth.people if not p.is_bot]
    leads = [p for p in humans if p.email is not None and p.anonymous_ids]
    assert 0.05 < len(leads) / len(humans) < 0.35
    first_touch: dict[int, str] = {}
    for touch in truth.touchpoints:
        first_touch.setdefault(touch.person, touch.channel)
    shares = Counter(first_touch.values())
    total = sum(shares.values())
    for channel in (Channel.PAID_SEARCH, Channel.ORGANIC_SEARCH, Channel.DIRECT):
        assert 0.08 < shares[channel.name] / total < 0.35, (channel, shares)
    assert {c.name for c in Channel} - set(shares) <= {"OTHER", "OFFLINE", "EMAIL"}
    assert Counter(t.channel for t in truth.touchpoints)["OFFLINE"] > 0

    reached = Counter(s.stage for d in truth.deals for s in d.stages)
    funnel = ["lead", "mql", "sql", "opportunity", "proposal", "negotiation", "closed_won"]
    assert [reached[s] for s in funnel] == sorted((reached[s] for s in funnel), reverse=True)
    assert reached["closed_won"] > 0 and reached["closed_lost"] > 0
    for deal in truth.deals:
        orders = [CANONICAL_STAGE_ORDER[s.stage] for s in deal.stages]
        assert orders == sorted(orders) and len(set(orders)) == len(orders)
        assert [s.occurred_at for s in deal.stages] == sorted(s.occurred_at for s in deal.stages)
        reached_opportunity = any(s.stage == "opportunity" for s in deal.stages)
        for stage in deal.stages:
            # amounts come with the opportunity and stay from then on
            assert (stage.amount is not None) == (
                reached_opportunity and CANONICAL_STAGE_ORDER[stage.stage] >= 40
            ), deal
            if stage.amount is not None:
                assert stage.amount > 0 and stage.amount % 100 == 0
                assert stage.amount.as_tuple().exponent == -2
    won = [d.stages[-1].amount for d in truth.deals if d.stages[-1].stage == "closed_won"]
    assert all(a is not None and Decimal(2000) <= a <= Decimal(200_000) for a in won)


def test_bots_use_crawler_agents_and_never_become_touchpoints(simulation: Simulation) -> None:
    truth = simulation.truth
    bot_ids = {a for p in truth.people if p.is_bot for a in p.anonymous_ids}
    assert bot_ids
    bot_beacons = [b for b in simulation.beacons if b.bot]
    assert len(bot_beacons) == truth.bot_beacons > 0
    assert all(b.user_agent in BOT_AGENTS for b in bot_beacons)
    assert all(b.user_agent not in BOT_AGENTS for b in simulation.beacons if not b.bot)
    assert {b.event["anonymous_id"] for b in bot_beacons} == bot_ids
    assert any(b.event["type"] == "form_submit" for b in bot_beacons)  # spam that must not count
    assert not bot_ids & {t.anonymous_id for t in truth.touchpoints}


def test_cross_device_cookie_loss_and_crm_only_contacts_occur(simulation: Simulation) -> None:
    truth = simulation.truth
    identified_anonymous: dict[int, set[str]] = defaultdict(set)
    for ident in truth.identifications:
        if not ident.anonymous_id.startswith("crm-activity-"):
            identified_anonymous[ident.person].add(ident.anonymous_id)
    assert any(len(ids) > 1 for ids in identified_anonymous.values())  # stitched across browsers
    web_ids = {t.anonymous_id for t in truth.touchpoints if not t.is_offline}
    never_identified = web_ids - {i.anonymous_id for i in truth.identifications}
    leads_with_lost_history = {
        t.person
        for t in truth.touchpoints
        if t.anonymous_id in never_identified and t.person in identified_anonymous
    }
    assert leads_with_lost_history  # cookies lost or devices never identified
    assert any(not p.anonymous_ids and p.email for p in truth.people)  # known only to the CRM
    emails = {i.email for i in truth.identifications}
    assert any(e != e.lower() or "+" in e for e in emails)  # typed differently than in the CRM


def test_slices_deliver_everything_once_in_order(simulation: Simulation) -> None:
    seen_beacons, seen_changes = [], []
    for beacons, changes in iter_slices(simulation):
        seen_beacons += beacons
        seen_changes += changes
    assert seen_beacons == list(simulation.beacons)
    assert seen_changes == list(simulation.stage_changes)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"visitors": 0}, "visitors"),
        ({"days": 120}, "days"),
        ({"crms": ("zoho",)}, "crms"),
        ({"bot_share": 1.5}, "bot_share"),
        ({"end": datetime(2026, 1, 1)}, "timezone"),  # noqa: DTZ001 - naive on purpose
    ],
)
def test_bad_configuration_is_refused_by_name(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        SimulationConfig(**{"end": END, **changes})


def test_default_end_is_a_full_hour_in_the_past() -> None:
    now = datetime(2026, 11, 25, 11, 42, 7, tzinfo=UTC)
    assert default_end(now) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
