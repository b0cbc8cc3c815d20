"""Attribution models: hand-worked journeys (arithmetic in the comments) and hypothesis properties."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.channels import Channel
from services.attributor.models import (
    CREDIT_PLACES,
    AttributionInputError,
    Conversion,
    JourneyTouch,
    MarkovWeights,
    Model,
    ModelSettings,
    all_credits,
    credits,
    eligible_touches,
    fit_markov,
    split_amount,
)
from services.common.errors import ConfigurationError

CONVERTED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DEFAULTS = ModelSettings()


def touch(touchpoint_id: str, days_before: float, channel: str = "PAID_SEARCH") -> JourneyTouch:
    """A touch ``days_before`` the conversion."""
    return JourneyTouch(touchpoint_id, CONVERTED_AT - days_before * DAY, channel)


def at(days_before: float) -> datetime:
    return CONVERTED_AT - days_before * DAY


def d(text: str) -> Decimal:
    return Decimal(text)


# Five touches, one per day, t0 oldest (4 days before the conversion), t4 newest.
FIVE = [
    touch(f"t{i}", 4 - i, ch)
    for i, ch in enumerate(["PAID_SEARCH", "EMAIL", "DIRECT", "ORGANIC_SEARCH", "DIRECT"])
]
PLAIN = Conversion(CONVERTED_AT)


# --------------------------------------------------------------------------- lookback window


def test_lookback_start_is_inclusive_and_one_microsecond_earlier_is_out() -> None:
    lookback = timedelta(days=30)
    exactly_at_edge = JourneyTouch("edge", CONVERTED_AT - lookback, "EMAIL")
    just_outside = JourneyTouch("out", CONVERTED_AT - lookback - timedelta(microseconds=1), "EMAIL")
    kept = eligible_touches([just_outside, exactly_at_edge], PLAIN, lookback)
    assert [t.touchpoint_id for t in kept] == ["edge"]


def test_conversion_moment_is_inclusive_and_later_touches_are_out() -> None:
    at_conversion = JourneyTouch("at", CONVERTED_AT, "EMAIL")
    after = JourneyTouch("after", CONVERTED_AT + timedelta(microseconds=1), "EMAIL")
    kept = eligible_touches([after, at_conversion], PLAIN, timedelta(days=90))
    assert [t.touchpoint_id for t in kept] == ["at"]


def test_lookback_edges_decide_credit() -> None:
    s = ModelSettings(lookback=timedelta(days=10))
    # The touch exactly 10 days back is first touch; 10 days + 1 µs back it would not be.
    inside = [touch("old", 10), touch("new", 1)]
    assert credits(Model.FIRST_TOUCH, inside, PLAIN, s) == {"old": d("1")}
    outside = [JourneyTouch("old", at(10) - timedelta(microseconds=1), "EMAIL"), touch("new", 1)]
    assert credits(Model.FIRST_TOUCH, outside, PLAIN, s) == {"new": d("1")}


def test_zero_lookback_keeps_only_touches_at_the_conversion() -> None:
    s = ModelSettings(lookback=timedelta(0))
    assert credits(Model.LINEAR, [touch("now", 0), touch("before", 0.001)], PLAIN, s) == {
        "now": d("1")
    }


def test_no_eligible_touch_gives_no_credits() -> None:
    assert credits(Model.LINEAR, [], PLAIN, DEFAULTS) == {}
    assert all_credits([touch("late", -1)], PLAIN, DEFAULTS) == {m: {} for m in Model}


def test_eligible_touches_sorted_by_time_then_id_and_deduplicated() -> None:
    same_time = at(1)
    touches = [
        JourneyTouch("b", same_time, "EMAIL"),
        JourneyTouch("a", same_time, "DIRECT"),
        touch("z", 2),
        JourneyTouch("b", same_time, "EMAIL"),
    ]
    kept = eligible_touches(touches, PLAIN, DEFAULTS.lookback)
    assert [t.touchpoint_id for t in kept] == ["z", "a", "b"]


def test_conflicting_duplicates_keep_the_earliest_copy() -> None:
    touches = [touch("x", 1, "EMAIL"), touch("x", 2, "REFERRAL"), touch("y", 1.5)]
    # x's copies: 1 day back (EMAIL) and 2 days back (REFERRAL); the earlier wins, so x is first.
    assert credits(Model.FIRST_TOUCH, touches, PLAIN, DEFAULTS) == {"x": d("1")}
    assert eligible_touches(touches, PLAIN, DEFAULTS.lookback)[0].channel == "REFERRAL"


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        ModelSettings(half_life=timedelta(0))
    with pytest.raises(ConfigurationError):
        ModelSettings(lookback=timedelta(days=-1))


# --------------------------------------------------------------------------- single-touch models


def test_first_last_and_linear_on_five_touches() -> None:
    assert credits(Model.FIRST_TOUCH, FIVE, PLAIN, DEFAULTS) == {"t0": d("1")}
    assert credits(Model.LAST_TOUCH, FIVE, PLAIN, DEFAULTS) == {"t4": d("1")}
    # Linear: 1/5 = 0.2 each.
    assert credits(Model.LINEAR, FIVE, PLAIN, DEFAULTS) == {f"t{i}": d("0.2") for i in range(5)}


def test_linear_rounding_remainder_goes_to_the_earliest_touches() -> None:
    # 1/3 = 0.333333333333|333…: three floors sum to 0.999999999999, one unit (1e-12) is
    # left; the remainders tie, so the earliest touch takes it.
    got = credits(Model.LINEAR, [touch("a", 3), touch("b", 2), touch("c", 1)], PLAIN, DEFAULTS)
    assert got == {"a": d("0.333333333334"), "b": d("0.333333333333"), "c": d("0.333333333333")}


def test_last_non_direct_skips_direct_touches() -> None:
    # t4 (newest) is DIRECT, t3 is ORGANIC_SEARCH.
    assert credits(Model.LAST_NON_DIRECT, FIVE, PLAIN, DEFAULTS) == {"t3": d("1")}


def test_last_non_direct_falls_back_to_last_touch_when_all_are_direct() -> None:
    journey = [touch("a", 3, "DIRECT"), touch("b", 2, "DIRECT")]
    assert credits(Model.LAST_NON_DIRECT, journey, PLAIN, DEFAULTS) == {"b": d("1")}


# --------------------------------------------------------------------------- time decay


def test_time_decay_whole_half_lives() -> None:
    # Half-life 7 days; touches 14, 7 and 0 days before the conversion:
    # weights 2^-2, 2^-1, 2^0 = 1/4, 1/2, 1; sum 7/4; credits 1/7, 2/7, 4/7.
    # 1/7 = 0.142857142857|14…, 2/7 = 0.285714285714|28…, 4/7 = 0.571428571428|57…
    # floors sum to 0.999999999999; the unit left goes to the largest remainder (4/7).
    journey = [touch("a", 14), touch("b", 7), touch("c", 0)]
    assert credits(Model.TIME_DECAY, journey, PLAIN, DEFAULTS) == {
        "a": d("0.142857142857"),
        "b": d("0.285714285714"),
        "c": d("0.571428571429"),
    }


def test_time_decay_fractional_half_life() -> None:
    # Half-life 7 days; touches 3.5 days and 0 days back: weights 2^-0.5 = 1/√2 and 1.
    # Older: (1/√2)/(1 + 1/√2) = 1/(√2 + 1) = √2 - 1 = 0.414213562373|095…
    # Newer: 2 - √2 = 0.585786437626|904…; the unit left goes to the newer (0.904 > 0.095).
    journey = [touch("old", 3.5), touch("new", 0)]
    assert credits(Model.TIME_DECAY, journey, PLAIN, DEFAULTS) == {
        "old": d("0.414213562373"),
        "new": d("0.585786437627"),
    }


def test_time_decay_depends_only_on_gaps_between_touches() -> None:
    # Moving the conversion one day later multiplies every weight by 2^(-1/7): no change.
    journey = [touch("a", 14), touch("b", 7), touch("c", 0)]
    later = Conversion(CONVERTED_AT + DAY)
    assert credits(Model.TIME_DECAY, journey, later, DEFAULTS) == credits(
        Model.TIME_DECAY, journey, PLAIN, DEFAULTS
    )


def test_time_decay_with_tiny_half_life_gives_all_to_the_newest() -> None:
    # One second half-life, one day apart: 2^-86400 of the newest rounds to nothing.
    s = ModelSettings(half_life=timedelta(seconds=1))
    assert credits(Model.TIME_DECAY, [touch("a", 2), touch("b", 1)], PLAIN, s) == {"b": d("1")}


def test_time_decay_equal_times_share_equally() -> None:
    journey = [touch("a", 2), touch("b", 2)]
    assert credits(Model.TIME_DECAY, journey, PLAIN, DEFAULTS) == {"a": d("0.5"), "b": d("0.5")}


# --------------------------------------------------------------------------- position based


def test_position_based_one_touch_gets_everything() -> None:
    assert credits(Model.POSITION_BASED, [touch("a", 1)], PLAIN, DEFAULTS) == {"a": d("1")}


def test_position_based_two_touches_split_half_half() -> None:
    got = credits(Model.POSITION_BASED, [touch("a", 2), touch("b", 1)], PLAIN, DEFAULTS)
    assert got == {"a": d("0.5"), "b": d("0.5")}


def test_position_based_three_touches_40_20_40() -> None:
    journey = [touch("a", 3), touch("b", 2), touch("c", 1)]
    got = credits(Model.POSITION_BASED, journey, PLAIN, DEFAULTS)
    assert got == {"a": d("0.4"), "b": d("0.2"), "c": d("0.4")}


def test_position_based_five_touches() -> None:
    # 40 % first, 40 % last, 20 % over the 3 middle touches: 0.2/3 = 0.066666666666|666…
    # Floors: 0.4 + 0.4 + 3 × 0.066666666666 = 0.999999999998: two units left, remainders
    # tie among the middle three, so the two earliest (t1, t2) get one each.
    assert credits(Model.POSITION_BASED, FIVE, PLAIN, DEFAULTS) == {
        "t0": d("0.4"),
        "t1": d("0.066666666667"),
        "t2": d("0.066666666667"),
        "t3": d("0.066666666666"),
        "t4": d("0.4"),
    }


# --------------------------------------------------------------------------- W-shaped


def test_w_shaped_three_distinct_milestones() -> None:
    # FIVE: t0..t4 at 4..0 days back. Lead created 2.5 days back -> last touch at or before
    # it is t1 (3 days back). Opportunity created 0.5 days back -> t3 (1 day back).
    # t0, t1, t3: 0.3 each; the rest (t2, t4) share 0.1: 0.05 each. Sum 0.9 + 0.1 = 1.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(2.5), opportunity_created_at=at(0.5))
    assert credits(Model.W_SHAPED, FIVE, conversion, DEFAULTS) == {
        "t0": d("0.3"),
        "t1": d("0.3"),
        "t2": d("0.05"),
        "t3": d("0.3"),
        "t4": d("0.05"),
    }


def test_w_shaped_milestone_exactly_at_touch_time_counts_that_touch() -> None:
    # Lead created exactly when t2 happened (2 days back): "at or before" picks t2.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(2), opportunity_created_at=at(1))
    got = credits(Model.W_SHAPED, FIVE, conversion, DEFAULTS)
    assert got == {"t0": d("0.3"), "t1": d("0.05"), "t2": d("0.3"), "t3": d("0.3"), "t4": d("0.05")}


def test_w_shaped_first_touch_is_also_the_lead_touch() -> None:
    # Lead created 3.5 days back -> t0 is both first and lead touch: 0.3 + 0.3 = 0.6.
    # Opportunity t3: 0.3. Rest t1, t2, t4 share 0.1: 1/30 = 0.033333333333|33… each;
    # floors sum to 0.999999999999, the unit left goes to the earliest of the tie (t1).
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(3.5), opportunity_created_at=at(0.5))
    assert credits(Model.W_SHAPED, FIVE, conversion, DEFAULTS) == {
        "t0": d("0.6"),
        "t1": d("0.033333333334"),
        "t2": d("0.033333333333"),
        "t3": d("0.3"),
        "t4": d("0.033333333333"),
    }


def test_w_shaped_missing_opportunity_scales_the_rest_up() -> None:
    # No opportunity yet. Raw: t0 0.3, lead t2 (lead created 1.5 days back... last touch at
    # or before is t2) 0.3, rest t1, t3, t4 share 0.1 -> 1/30 each. Raw sum 0.7, so divide
    # by 0.7: t0, t2 = 3/7 = 0.428571428571|42…; others (1/30)/(7/10) = 1/21 =
    # 0.047619047619|04… Floors sum to 0.999999999999; the largest remainder is 3/7's
    # (0.428… > 0.047…), tie between t0 and t2 -> the earlier, t0.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(1.5))
    assert credits(Model.W_SHAPED, FIVE, conversion, DEFAULTS) == {
        "t0": d("0.428571428572"),
        "t1": d("0.047619047619"),
        "t2": d("0.428571428571"),
        "t3": d("0.047619047619"),
        "t4": d("0.047619047619"),
    }


def test_w_shaped_lead_created_before_every_touch_is_missing() -> None:
    # Lead created 10 days back, before t0: there is no lead touch (its 30 % is missing).
    # Opportunity 0 days back -> t4. Raw: t0 0.3, t4 0.3, t1..t3 1/30 each; ÷ 0.7 as above.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(10), opportunity_created_at=at(0))
    got = credits(Model.W_SHAPED, FIVE, conversion, DEFAULTS)
    assert got["t0"] + got["t4"] == d("0.857142857143")
    assert got["t1"] == got["t2"] == got["t3"] == d("0.047619047619")


def test_w_shaped_without_other_touches_spreads_the_ten_percent_proportionally() -> None:
    # Two touches; lead and opportunity both created after b: a = 0.3, b = 0.3 + 0.3 = 0.6,
    # no other touch for the 0.1, raw sum 0.9: a = 1/3, b = 2/3.
    # 1/3 = 0.333333333333|3…, 2/3 = 0.666666666666|6…: the unit goes to b.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(0.5), opportunity_created_at=at(0.2))
    got = credits(Model.W_SHAPED, [touch("a", 2), touch("b", 1)], conversion, DEFAULTS)
    assert got == {"a": d("0.333333333333"), "b": d("0.666666666667")}


def test_w_shaped_single_touch_and_no_milestones() -> None:
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(0.5), opportunity_created_at=at(0.2))
    assert credits(Model.W_SHAPED, [touch("a", 1)], conversion, DEFAULTS) == {"a": d("1")}
    # No lead/opportunity times: first touch 0.3, the rest 0.1, ÷ 0.4 -> 3/4 and 1/4 spread.
    got = credits(Model.W_SHAPED, [touch("a", 2), touch("b", 1)], PLAIN, DEFAULTS)
    assert got == {"a": d("0.75"), "b": d("0.25")}


# --------------------------------------------------------------------------- full path


def test_full_path_four_distinct_milestones() -> None:
    # Six touches t0..t5 at 5..0 days back; lead 3.5 back -> t1; opportunity 1.5 back -> t3;
    # last touch t5. t0, t1, t3, t5: 22.5 % each = 0.9; t2, t4 share 0.1: 0.05 each.
    journey = [touch(f"t{i}", 5 - i) for i in range(6)]
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(3.5), opportunity_created_at=at(1.5))
    assert credits(Model.FULL_PATH, journey, conversion, DEFAULTS) == {
        "t0": d("0.225"),
        "t1": d("0.225"),
        "t2": d("0.05"),
        "t3": d("0.225"),
        "t4": d("0.05"),
        "t5": d("0.225"),
    }


def test_full_path_coinciding_milestones_merge() -> None:
    # Three touches; lead and opportunity both -> b: a 0.225, b 0.45, c (last) 0.225; no rest,
    # raw sum 0.9, ÷ 0.9: 0.25, 0.5, 0.25.
    journey = [touch("a", 3), touch("b", 2), touch("c", 1)]
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(1.5), opportunity_created_at=at(1.2))
    got = credits(Model.FULL_PATH, journey, conversion, DEFAULTS)
    assert got == {"a": d("0.25"), "b": d("0.5"), "c": d("0.25")}


def test_full_path_opportunity_on_the_last_touch() -> None:
    # FIVE; lead 2.5 back -> t1; opportunity now -> t4 = last touch: t0 0.225, t1 0.225,
    # t4 0.45, t2 and t3 0.05 each: sum 0.9 + 0.1 = 1.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(2.5), opportunity_created_at=at(0))
    assert credits(Model.FULL_PATH, FIVE, conversion, DEFAULTS) == {
        "t0": d("0.225"),
        "t1": d("0.225"),
        "t2": d("0.05"),
        "t3": d("0.05"),
        "t4": d("0.45"),
    }


# --------------------------------------------------------------------------- data driven


def test_data_driven_splits_by_removal_effect_shared_within_a_channel() -> None:
    # Removal effects PAID_SEARCH 0.5, EMAIL 1, DIRECT 0.25 (sum 1.75).
    # Journey: PAID_SEARCH, EMAIL, EMAIL, DIRECT.
    # PAID_SEARCH 0.5/1.75 = 2/7; EMAIL 1/1.75 = 4/7 shared by two touches: 2/7 each;
    # DIRECT 0.25/1.75 = 1/7. 2/7 = 0.285714285714|28…, 1/7 = 0.142857142857|14…:
    # floors sum to 0.999999999999; the unit goes to the earliest 2/7 (p).
    s = ModelSettings(
        markov=MarkovWeights({"PAID_SEARCH": d("0.5"), "EMAIL": d("1"), "DIRECT": d("0.25")})
    )
    journey = [
        touch("p", 4, "PAID_SEARCH"),
        touch("e1", 3, "EMAIL"),
        touch("e2", 2, "EMAIL"),
        touch("x", 1, "DIRECT"),
    ]
    assert credits(Model.DATA_DRIVEN, journey, PLAIN, s) == {
        "p": d("0.285714285715"),
        "e1": d("0.285714285714"),
        "e2": d("0.285714285714"),
        "x": d("0.142857142857"),
    }


def test_data_driven_channels_without_weight_get_nothing() -> None:
    s = ModelSettings(markov=MarkovWeights({"EMAIL": d("0.3")}))
    journey = [touch("a", 2, "EMAIL"), touch("b", 1, "REFERRAL")]
    assert credits(Model.DATA_DRIVEN, journey, PLAIN, s) == {"a": d("1")}


def test_data_driven_falls_back_to_linear() -> None:
    journey = [touch("a", 3, "EMAIL"), touch("b", 2, "REFERRAL"), touch("c", 1, "DIRECT")]
    linear = credits(Model.LINEAR, journey, PLAIN, DEFAULTS)
    # No weights fitted yet.
    assert credits(Model.DATA_DRIVEN, journey, PLAIN, DEFAULTS) == linear
    # Weights exist but every eligible channel weighs zero (or is unknown).
    zero = ModelSettings(markov=MarkovWeights({"EMAIL": d("0"), "PAID_SEARCH": d("0.9")}))
    assert credits(Model.DATA_DRIVEN, journey, PLAIN, zero) == linear


# --------------------------------------------------------------------------- Markov chain


def test_markov_removal_effect_textbook_example() -> None:
    # Three journeys (the classic example of Anderl et al. / ChannelAttribution):
    #   C1 > C2 > C3 > conversion;  C1 > null;  C2 > C3 > null.
    # Transitions: start->C1 2/3, start->C2 1/3; C1->C2 1/2, C1->null 1/2; C2->C3 1;
    # C3->conversion 1/2, C3->null 1/2.
    # P(conversion) = 2/3·1/2·1·1/2 + 1/3·1·1/2 = 1/6 + 1/6 = 1/3.
    # Without C1 (start->C1 goes to null): 1/3·1·1/2 = 1/6 -> effect 1 - (1/6)/(1/3) = 1/2.
    # Without C2: no path reaches C3 -> 0 -> effect 1. Without C3: 0 -> effect 1.
    weights = fit_markov([(["C1", "C2", "C3"], True), (["C1"], False), (["C2", "C3"], False)])
    assert weights.removal_effects == {"C1": d("0.5"), "C2": d("1"), "C3": d("1")}
    # Data-driven credit of the converting journey: 0.5 : 1 : 1 -> 0.2, 0.4, 0.4.
    journey = [touch("a", 3, "C1"), touch("b", 2, "C2"), touch("c", 1, "C3")]
    got = credits(Model.DATA_DRIVEN, journey, PLAIN, ModelSettings(markov=weights))
    assert got == {"a": d("0.2"), "b": d("0.4"), "c": d("0.4")}


def test_markov_removal_effect_with_a_loop_and_a_direct_conversion() -> None:
    # Journeys: A > B > conversion;  B > A > conversion;  A > null.
    # Transitions: start->A 2/3, start->B 1/3; A->B 1/3, A->conv 1/3, A->null 1/3;
    # B->conv 1/2, B->A 1/2.
    # x_A = 1/3·x_B + 1/3, x_B = 1/2 + 1/2·x_A  ->  x_A = 1/6 + 1/6·x_A + 1/3
    #   -> 5/6·x_A = 1/2 -> x_A = 3/5, x_B = 1/2 + 3/10 = 4/5.
    # P = 2/3·3/5 + 1/3·4/5 = 6/15 + 4/15 = 2/3.
    # Without A: x_B = 1/2, P = 1/3·1/2 = 1/6 -> effect 1 - (1/6)/(2/3) = 3/4.
    # Without B: x_A = 1/3, P = 2/3·1/3 = 2/9 -> effect 1 - (2/9)/(2/3) = 2/3 = 0.666666666667.
    weights = fit_markov([(["A", "B"], True), (["B", "A"], True), (["A"], False)])
    assert weights.removal_effects == {"A": d("0.75"), "B": d("0.666666666667")}


def test_markov_without_conversions_gives_zero_effects() -> None:
    weights = fit_markov([(["A", "B"], False), (["B"], False)])
    assert weights.removal_effects == {"A": d("0"), "B": d("0")}
    assert fit_markov([]).removal_effects == {}


def test_markov_repeated_channel_does_not_change_effects() -> None:
    base = fit_markov([(["A", "B"], True), (["A"], False)])
    repeated = fit_markov([(["A", "A", "A", "B"], True), (["A", "A"], False)])
    assert base.removal_effects == repeated.removal_effects


# --------------------------------------------------------------------------- split_amount


def test_split_amount_thirds_to_the_cent() -> None:
    # 100.00 / 3 = 33.333…: 33.33 each is 99.99, the cent left goes to the tie-break winner
    # (equal credits -> smallest key).
    third = d("0.333333333333")
    parts = split_amount(d("100.00"), {"b": third, "a": third, "c": third})
    assert parts == {"a": d("33.34"), "b": d("33.33"), "c": d("33.33")}
    assert sum(parts.values()) == d("100.00")


def test_split_amount_largest_remainder_then_larger_credit() -> None:
    # 10.00 over 0.6 / 0.2 / 0.2 minus rounding: exact 6.00, 2.00, 2.00.
    assert split_amount(d("10"), {"a": d("0.6"), "b": d("0.2"), "c": d("0.2")}) == {
        "a": d("6.00"),
        "b": d("2.00"),
        "c": d("2.00"),
    }
    # 0.05 over 0.5/0.5: 2.5 cents each -> floors 2 + 2, the cent left: remainders tie, credits
    # tie -> smallest key "x".
    assert split_amount(d("0.05"), {"y": d("0.5"), "x": d("0.5")}) == {
        "x": d("0.03"),
        "y": d("0.02"),
    }
    # 0.10 over 0.7/0.3: 7 and 3 cents exactly.
    assert split_amount(d("0.10"), {"a": d("0.7"), "b": d("0.3")}) == {
        "a": d("0.07"),
        "b": d("0.03"),
    }


def test_split_amount_refund_and_zero_credit() -> None:
    parts = split_amount(d("-100.00"), {"a": d("0.5"), "b": d("0.5"), "z": d("0")})
    assert parts == {"a": d("-50.00"), "b": d("-50.00"), "z": d("0.00")}


def test_split_amount_of_w_shaped_credits() -> None:
    # W-shaped credits 0.6 / 0.0333… ×3 / 0.3 of 1,000.00: 600.00, 300.00, and 100.00 over
    # three nearly equal credits: 33.333… each -> 33.34 to t1 (its credit is the largest of
    # the three: 0.033333333334), 33.33, 33.33.
    conversion = Conversion(CONVERTED_AT, lead_created_at=at(3.5), opportunity_created_at=at(0.5))
    parts = split_amount(d("1000.00"), credits(Model.W_SHAPED, FIVE, conversion, DEFAULTS))
    assert parts == {
        "t0": d("600.00"),
        "t1": d("33.34"),
        "t2": d("33.33"),
        "t3": d("300.00"),
        "t4": d("33.33"),
    }


def test_split_amount_rejects_bad_input() -> None:
    with pytest.raises(AttributionInputError, match="quantum"):
        split_amount(d("10.005"), {"a": d("1")})
    with pytest.raises(AttributionInputError, match="empty"):
        split_amount(d("10"), {})
    with pytest.raises(AttributionInputError, match="negative"):
        split_amount(d("10"), {"a": d("-1"), "b": d("2")})
    with pytest.raises(AttributionInputError, match="zero"):
        split_amount(d("10"), {"a": d("0")})


def test_split_amount_other_quantum() -> None:
    # Whole yen: 1000 over thirds -> 334 / 333 / 333.
    third = d("0.333333333333")
    parts = split_amount(d("1000"), {"a": third, "b": third, "c": third}, quantum=d("1"))
    assert parts == {"a": d("334"), "b": d("333"), "c": d("333")}


# --------------------------------------------------------------------------- properties

CHANNELS = [c.name for c in Channel]
# A few distinct times so equal times happen often; offsets in hours before the conversion,
# including after it (negative) and outside a 30-day lookback.
OFFSET_HOURS = st.sampled_from([-5, 0, 1, 1, 24, 24, 100, 719, 720, 721, 2000])


@st.composite
def journeys(draw: st.DrawFn) -> list[JourneyTouch]:
    ids = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=12, unique=True))
    return [
        JourneyTouch(
            tp_id,
            CONVERTED_AT
            - timedelta(hours=draw(OFFSET_HOURS), minutes=draw(st.sampled_from([0, 0, 30]))),
            draw(st.sampled_from(CHANNELS)),
        )
        for tp_id in ids
    ]


@st.composite
def conversions(draw: st.DrawFn) -> Conversion:
    maybe_time = st.none() | OFFSET_HOURS.map(lambda h: CONVERTED_AT - timedelta(hours=h))
    return Conversion(
        CONVERTED_AT, lead_created_at=draw(maybe_time), opportunity_created_at=draw(maybe_time)
    )


@st.composite
def model_settings(draw: st.DrawFn) -> ModelSettings:
    effects = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(CHANNELS),
            st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False),
        )
    )
    return ModelSettings(
        lookback=timedelta(days=30),
        half_life=timedelta(hours=draw(st.sampled_from([1, 7, 24, 168, 1000]))),
        markov=None if effects is None else MarkovWeights(effects),
    )


@settings(max_examples=150, deadline=None)
@given(journeys(), conversions(), model_settings())
def test_credits_sum_to_exactly_one_for_every_model(
    journey: list[JourneyTouch], conversion: Conversion, s: ModelSettings
) -> None:
    eligible_ids = {t.touchpoint_id for t in eligible_touches(journey, conversion, s.lookback)}
    for model, got in all_credits(journey, conversion, s).items():
        assert got == credits(model, journey, conversion, s)
        if not eligible_ids:
            assert got == {}
            continue
        assert sum(got.values()) == Decimal(1), model
        assert set(got) <= eligible_ids
        for value in got.values():
            assert value > 0
            assert value.as_tuple().exponent == -CREDIT_PLACES


@settings(max_examples=100, deadline=None)
@given(journeys(), conversions(), model_settings(), st.randoms(use_true_random=False))
def test_permuting_touches_gives_equal_credits(
    journey: list[JourneyTouch], conversion: Conversion, s: ModelSettings, rnd: random.Random
) -> None:
    shuffled = list(journey)
    rnd.shuffle(shuffled)
    assert all_credits(shuffled, conversion, s) == all_credits(journey, conversion, s)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=8), st.randoms(use_true_random=False), model_settings())
def test_permuting_touches_with_equal_times_gives_equal_credits(
    n: int, rnd: random.Random, s: ModelSettings
) -> None:
    same = at(1)
    journey = [touch("first", 2, "EMAIL")] + [
        JourneyTouch(f"tp{i}", same, CHANNELS[i % len(CHANNELS)]) for i in range(n)
    ]
    shuffled = list(journey)
    rnd.shuffle(shuffled)
    conversion = Conversion(CONVERTED_AT, lead_created_at=same)
    assert all_credits(shuffled, conversion, s) == all_credits(journey, conversion, s)


@settings(max_examples=100, deadline=None)
@given(journeys(), conversions(), model_settings(), st.data())
def test_duplicating_touches_does_not_change_credits(
    journey: list[JourneyTouch], conversion: Conversion, s: ModelSettings, data: st.DataObject
) -> None:
    copies = data.draw(st.lists(st.sampled_from(journey), max_size=6)) if journey else []
    assert all_credits(journey + copies, conversion, s) == all_credits(journey, conversion, s)


@settings(max_examples=200, deadline=None)
@given(
    journeys(),
    conversions(),
    model_settings(),
    st.sampled_from(list(Model)),
    st.integers(min_value=-(10**12), max_value=10**12),
)
def test_split_amount_adds_up_to_the_cent(
    journey: list[JourneyTouch], conversion: Conversion, s: ModelSettings, model: Model, cents: int
) -> None:
    got = credits(model, journey, conversion, s)
    if not got:
        return
    amount = Decimal(cents).scaleb(-2)
    parts = split_amount(amount, got)
    assert set(parts) == set(got)
    assert sum(parts.values()) == amount
    for key, part in parts.items():
        assert part.as_tuple().exponent == -2
        # Each part is within one cent of its exact share.
        assert abs(Fraction(part) - Fraction(amount) * Fraction(got[key])) < Fraction(1, 100)
