"""Expected reports from a ground-truth file: identity rules, milestones and hand-worked amounts."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from services.attributor.models import Conversion, JourneyTouch, Model
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings
from services.demo.ground_truth import (
    LEAD_CREATED,
    CreditRow,
    StageTotal,
    conversions,
    expected_credits,
    expected_reports,
    format_report,
    leads,
    load,
    stitched_leads,
)
from services.demo.reference_models import reference_credits, reference_split
from services.demo.simulator import (
    GroundTruth,
    SimulationConfig,
    TruthDeal,
    TruthIdentification,
    TruthStage,
    TruthTouchpoint,
    simulate,
)

T0 = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
IDENTITY = IdentitySettings()


def _touch(
    tid: str, anonymous_id: str, days: float, channel: str, campaign: str | None = None
) -> TruthTouchpoint:
    return TruthTouchpoint(
        touchpoint_id=tid,
        anonymous_id=anonymous_id,
        first_event_id=f"e-{tid}",
        occurred_at=T0 + timedelta(days=days),
        channel=channel,
        source="s",
        medium="m",
        campaign=campaign,
        term=None,
        content=None,
        landing_page=None,
        is_offline=channel == "OFFLINE",
        person=1,
        kind="test",
    )


def _ident(anonymous_id: str, days: float, email: str) -> TruthIdentification:
    return TruthIdentification(
        f"i-{anonymous_id}-{days}", anonymous_id, email, T0 + timedelta(days=days), 1
    )


def _stage(stage: str, days: float, amount: str | None = None) -> TruthStage:
    return TruthStage(
        f"d-{stage}", stage, T0 + timedelta(days=days), None if amount is None else Decimal(amount)
    )


def _truth(
    touches: list[TruthTouchpoint],
    idents: list[TruthIdentification],
    deals: list[TruthDeal] = (),  # type: ignore[assignment]
) -> GroundTruth:
    return GroundTruth(
        seed=1,
        visitors=1,
        start=T0 - timedelta(days=200),
        end=T0 + timedelta(days=100),
        people=(),
        touchpoints=tuple(touches),
        identifications=tuple(idents),
        deals=tuple(deals),
        beacons=0,
        bot_beacons=0,
    )


def test_touchpoints_belong_to_the_lead_by_the_identity_rules() -> None:
    truth = _truth(
        [
            _touch("before-in-window", "a", -89, "DIRECT"),
            _touch("before-out-of-window", "a", -91, "DIRECT"),
            _touch("after", "a", 5, "EMAIL"),
            _touch("never-identified", "b", 1, "PAID_SEARCH"),
            _touch("second-device", "c", -3, "ORGANIC_SEARCH"),
        ],
        [_ident("a", 0, "Jane.Doe@Example.com"), _ident("c", 10, "jane.doe@example.com")],
    )
    lead = lead_id_for_email("jane.doe@example.com", IDENTITY)
    assert stitched_leads(truth, IDENTITY) == {
        "before-in-window": lead,
        "after": lead,
        "second-device": lead,
    }
    (found,) = leads(truth, IDENTITY).values()
    assert found.created_at == T0  # the first identification on any device
    assert [t.touchpoint_id for t in found.touchpoints] == [
        "before-in-window",
        "second-device",
        "after",
    ]


def test_a_device_switching_leads_gives_earlier_touches_to_the_first_lead() -> None:
    truth = _truth(
        [_touch("t1", "shared", 1, "DIRECT"), _touch("t2", "shared", 3, "EMAIL")],
        [_ident("shared", 0, "a@example.com"), _ident("shared", 2, "b@example.com")],
    )
    owners = stitched_leads(truth, IDENTITY)
    assert owners["t1"] == lead_id_for_email("a@example.com", IDENTITY)
    assert owners["t2"] == lead_id_for_email("b@example.com", IDENTITY)


def test_revenue_splits_to_the_cent_under_first_touch_and_linear() -> None:
    email = "buyer@example.com"
    truth = _truth(
        [
            _touch("t1", "a", -10, "PAID_SEARCH", "brand"),
            _touch("t2", "a", -5, "EMAIL", "nurture"),
            _touch("t3", "a", 2, "DIRECT"),
            _touch("late", "a", 30, "DISPLAY", "retargeting"),  # after the win: no credit
        ],
        [_ident("a", 0, email)],
        [
            TruthDeal(
                "D1",
                1,
                "Buyer@Example.com",
                "generic",
                "default",
                "EUR",
                (
                    _stage("lead", 1),
                    _stage("opportunity", 3, "1000.00"),
                    _stage("closed_won", 20, "1000.00"),
                ),
            )
        ],
    )
    reports = expected_reports(truth, IDENTITY)
    assert reports.revenue_by_channel[Model.FIRST_TOUCH] == {"PAID_SEARCH": Decimal("1000.00")}
    assert reports.revenue_by_channel[Model.LAST_TOUCH] == {"DIRECT": Decimal("1000.00")}
    assert reports.revenue_by_channel[Model.LAST_NON_DIRECT] == {"EMAIL": Decimal("1000.00")}
    # 1/3 each: 333.33 three times leaves one cent, which goes to the largest credit (t1's
    # 0.333333333334, the first touch's remainder unit).
    assert reports.revenue_by_channel[Model.LINEAR] == {
        "PAID_SEARCH": Decimal("333.34"),
        "EMAIL": Decimal("333.33"),
        "DIRECT": Decimal("333.33"),
    }
    assert reports.revenue_by_campaign[Model.FIRST_TOUCH] == {
        ("PAID_SEARCH", "brand"): Decimal("1000.00")
    }
    # the lead was created at day 0, after t1 and t2 only
    assert reports.leads_by_channel[Model.LINEAR] == {
        "PAID_SEARCH": Decimal("0.5"),
        "EMAIL": Decimal("0.5"),
    }
    assert reports.won_revenue == Decimal("1000.00")
    assert reports.unattributed_won_revenue == 0
    assert reports.pipeline_by_stage["opportunity"].deals == 1
    assert reports.current_pipeline["closed_won"].amount == Decimal("1000.00")
    assert "PAID_SEARCH" in format_report(reports, Model.FIRST_TOUCH)


def test_stage_conversions_use_the_deals_latest_amount_and_opportunity_time() -> None:
    truth = _truth(
        [_touch("t1", "a", -1, "DIRECT")],
        [_ident("a", 0, "x@example.com")],
        [
            TruthDeal(
                "D1", 1, "x@example.com", "generic", "default", "EUR",
                (
                    _stage("sql", 1),
                    _stage("opportunity", 2, "500.00"),
                    _stage("proposal", 3, "650.00"),
                    _stage("closed_lost", 4, "650.00"),
                ),
            )
        ],
    )  # fmt: skip
    by_kind = {c.kind: c for c in conversions(truth, IDENTITY)}
    assert by_kind[LEAD_CREATED].lead_created_at == T0
    assert by_kind[LEAD_CREATED].amount is None
    opportunity_at = T0 + timedelta(days=2)
    for kind in ("sql", "opportunity", "proposal", "closed_lost"):
        assert by_kind[kind].opportunity_created_at == opportunity_at, kind
        assert by_kind[kind].amount == Decimal("650.00"), kind
        assert by_kind[kind].lead_created_at == T0
    assert by_kind["sql"].occurred_at == T0 + timedelta(days=1)
    reports = expected_reports(truth, IDENTITY)
    assert reports.pipeline_by_stage["sql"] == StageTotal(1, Decimal("650.00"))
    assert reports.current_pipeline == {"closed_lost": StageTotal(1, Decimal("650.00"))}


def test_a_loss_before_the_opportunity_has_no_opportunity_and_zero_amount() -> None:
    truth = _truth(
        [_touch("t1", "a", -1, "DIRECT")],
        [_ident("a", 0, "x@example.com")],
        [
            TruthDeal(
                "D1",
                1,
                "x@example.com",
                "generic",
                "default",
                "EUR",
                (_stage("mql", 1), _stage("closed_lost", 2)),
            )
        ],
    )
    by_kind = {c.kind: c for c in conversions(truth, IDENTITY)}
    assert by_kind["closed_lost"].opportunity_created_at is None
    assert by_kind["closed_lost"].amount == Decimal("0.00")


def test_a_deal_without_web_history_is_unattributed() -> None:
    truth = _truth(
        [],
        [],
        [
            TruthDeal(
                "D9",
                9,
                "cold@example.com",
                "generic",
                "default",
                "EUR",
                (_stage("closed_won", 1, "700.00"),),
            )
        ],
    )
    reports = expected_reports(truth, IDENTITY)
    assert reports.unattributed_won_revenue == Decimal("700.00")
    assert all(not v for v in reports.revenue_by_channel.values())
    assert reports.leads == 0


def test_credits_sum_to_one_and_amounts_to_the_deal_for_a_whole_simulation(tmp_path: Path) -> None:
    simulation = simulate(
        SimulationConfig(end=datetime(2026, 11, 20, tzinfo=UTC), seed=11, visitors=800)
    )
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(simulation.truth.to_json()))
    truth = load(path)
    rows = expected_credits(truth, IDENTITY)
    credit_sums: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    amount_sums: dict[tuple[object, ...], Decimal] = defaultdict(Decimal)
    for row in rows:
        key = (row.conversion.lead_id, row.conversion.deal_id, row.conversion.kind, row.model)
        credit_sums[key] += row.credit
        if row.amount is not None:
            amount_sums[key] += row.amount
    assert credit_sums and all(total == 1 for total in credit_sums.values())
    amounts = {
        (c.lead_id, c.deal_id, c.kind): c.amount
        for c in conversions(truth, IDENTITY)
        if c.amount is not None
    }
    for (lead, deal, kind, _model), total in amount_sums.items():
        assert total == amounts[(lead, deal, kind)]
    reports = expected_reports(truth, IDENTITY)
    for model in (Model.FIRST_TOUCH, Model.LINEAR, Model.W_SHAPED):
        attributed = sum(reports.revenue_by_channel[model].values(), Decimal(0))
        assert attributed + reports.unattributed_won_revenue == reports.won_revenue
        assert sum(reports.leads_by_channel[model].values(), Decimal(0)) == reports.leads
    # first touch counts whole leads
    assert all(
        v == v.to_integral_value() for v in reports.leads_by_channel[Model.FIRST_TOUCH].values()
    )


def _key(row: CreditRow) -> tuple[object, ...]:
    c = row.conversion
    return (c.lead_id, c.deal_id, c.kind, row.model, row.touchpoint.touchpoint_id)


def test_the_reference_models_agree_with_the_attributors_on_a_whole_simulation() -> None:
    simulation = simulate(
        SimulationConfig(end=datetime(2026, 11, 20, tzinfo=UTC), seed=21, visitors=2500)
    )
    reference = expected_credits(simulation.truth, IDENTITY)
    attributor = expected_credits(simulation.truth, IDENTITY, engine="attributor")
    assert len(reference) > 5000
    assert {_key(r): (r.credit, r.amount) for r in reference} == {
        _key(r): (r.credit, r.amount) for r in attributor
    }


def test_reference_models_by_hand() -> None:
    day = timedelta(days=1)
    touches = [
        JourneyTouch("a", T0, "PAID_SEARCH"),
        JourneyTouch("b", T0 + 7 * day, "DIRECT"),
        JourneyTouch("c", T0 + 14 * day, "DIRECT"),
    ]
    conversion = Conversion(T0 + 14 * day, lead_created_at=T0 + 8 * day)
    assert reference_credits(Model.LAST_NON_DIRECT, touches, conversion) == {"a": Decimal(1)}
    assert reference_credits(Model.TIME_DECAY, touches, conversion) == {
        "a": Decimal("0.142857142857"),
        "b": Decimal("0.285714285714"),
        "c": Decimal("0.571428571429"),
    }
    # W-shaped: first a .3, lead-creation touch b .3, no opportunity, c .1: sum .7
    assert reference_credits(Model.W_SHAPED, touches, conversion) == {
        "a": Decimal("0.428571428572"),
        "b": Decimal("0.428571428571"),
        "c": Decimal("0.142857142857"),
    }
    linear = reference_credits(Model.LINEAR, touches, conversion)
    assert reference_split(Decimal("100.00"), linear) == {
        "a": Decimal("33.34"),
        "b": Decimal("33.33"),
        "c": Decimal("33.33"),
    }
