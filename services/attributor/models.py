"""Attribution models as pure functions over one journey and one conversion.

A journey is the lead's touchpoints; a conversion is a moment (a deal stage change,
lead creation) with the times the lead and the opportunity were created. Every model
answers ``touchpoint_id -> credit``: Decimals quantized to ``CREDIT_PLACES`` places
that add up to exactly ``Decimal(1)``. Weights are computed as exact Fractions and
quantized once, by largest remainder, so the rounding never depends on input order.
No I/O here: the worker feeds journeys in and writes the credits out.

See services/attributor/README.md ("Models") for the definitions with worked numbers.
"""

from __future__ import annotations

import decimal
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

from schemas.channels import Channel
from services.common.errors import ClosedloopError, ConfigurationError

CREDIT_PLACES = 12
CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_PLACES)
REMOVAL_EFFECT_PLACES = 12
DIRECT = Channel.DIRECT.name

# Time decay: a touch more than this many half-lives older than the newest eligible
# touch weighs less than 2**-128 of it, far below one credit quantum, so it gets 0
# instead of a Decimal with a million-digit exponent.
_MAX_HALF_LIVES = 128
_DECAY_CONTEXT = decimal.Context(prec=30, rounding=decimal.ROUND_HALF_EVEN)
_LN2 = decimal.Context(prec=40).ln(Decimal(2))

_W_SHAPED_MILESTONE = Fraction(3, 10)
_FULL_PATH_MILESTONE = Fraction(9, 40)  # 22.5 %
_REST = Fraction(1, 10)


class AttributionInputError(ClosedloopError, ValueError):
    """Arguments no model or split can work with (negative credits, an amount finer than the quantum)."""


class Model(StrEnum):
    """The attribution models; the value is what ClickHouse and the reports store."""

    FIRST_TOUCH = "first_touch"
    LAST_TOUCH = "last_touch"
    LAST_NON_DIRECT = "last_non_direct"
    LINEAR = "linear"
    TIME_DECAY = "time_decay"
    POSITION_BASED = "position_based"
    W_SHAPED = "w_shaped"
    FULL_PATH = "full_path"
    DATA_DRIVEN = "data_driven"


@dataclass(frozen=True)
class JourneyTouch:
    """One touchpoint of a lead's journey; ``channel`` is a ``Channel`` name (Avro symbol)."""

    touchpoint_id: str
    occurred_at: datetime
    channel: str


@dataclass(frozen=True)
class Conversion:
    """The moment being attributed and the lead/opportunity creation times W-shaped and full path need."""

    occurred_at: datetime
    lead_created_at: datetime | None = None
    opportunity_created_at: datetime | None = None


@dataclass(frozen=True)
class MarkovWeights:
    """Removal effect per channel (0..1), fitted by ``fit_markov``."""

    removal_effects: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSettings:
    """Lookback window, time-decay half-life and the data-driven weights (None = linear fallback)."""

    lookback: timedelta = timedelta(days=90)
    half_life: timedelta = timedelta(days=7)
    markov: MarkovWeights | None = None

    def __post_init__(self) -> None:
        if self.lookback < timedelta(0):
            raise ConfigurationError(f"lookback must not be negative, got {self.lookback}")
        if self.half_life <= timedelta(0):
            raise ConfigurationError(f"half_life must be positive, got {self.half_life}")


# --------------------------------------------------------------------------- journey


def eligible_touches(
    touches: Iterable[JourneyTouch], conversion: Conversion, lookback: timedelta
) -> list[JourneyTouch]:
    """The touches that can earn credit, in journey order.

    Eligible means ``conversion.occurred_at - lookback <= occurred_at <= conversion.occurred_at``
    (both edges inclusive). Duplicates by ``touchpoint_id`` collapse to one (if the copies
    disagree, the one with the smallest ``(occurred_at, channel)`` wins, before the window
    is applied). Sorted by ``(occurred_at, touchpoint_id)`` so equal times never depend on
    input order.
    """
    unique: dict[str, JourneyTouch] = {}
    for touch in touches:
        kept = unique.get(touch.touchpoint_id)
        if kept is None or (touch.occurred_at, touch.channel) < (kept.occurred_at, kept.channel):
            unique[touch.touchpoint_id] = touch
    start = conversion.occurred_at - lookback
    eligible = [t for t in unique.values() if start <= t.occurred_at <= conversion.occurred_at]
    eligible.sort(key=lambda t: (t.occurred_at, t.touchpoint_id))
    return eligible


# --------------------------------------------------------------------------- models

# Each model maps the eligible touches (non-empty, journey order) to one non-negative
# Fraction weight per touch; ``_normalize_and_quantize`` turns weights into credits.
_Weights = list[Fraction]


def _first_touch(touches: Sequence[JourneyTouch], _c: Conversion, _s: ModelSettings) -> _Weights:
    return [Fraction(1) if i == 0 else Fraction(0) for i in range(len(touches))]


def _last_touch(touches: Sequence[JourneyTouch], _c: Conversion, _s: ModelSettings) -> _Weights:
    last = len(touches) - 1
    return [Fraction(1) if i == last else Fraction(0) for i in range(len(touches))]


def _last_non_direct(
    touches: Sequence[JourneyTouch], conversion: Conversion, settings: ModelSettings
) -> _Weights:
    non_direct = [i for i, t in enumerate(touches) if t.channel != DIRECT]
    if not non_direct:
        return _last_touch(touches, conversion, settings)
    return [Fraction(1) if i == non_direct[-1] else Fraction(0) for i in range(len(touches))]


def _linear(touches: Sequence[JourneyTouch], _c: Conversion, _s: ModelSettings) -> _Weights:
    return [Fraction(1)] * len(touches)


def _time_decay(
    touches: Sequence[JourneyTouch], _c: Conversion, settings: ModelSettings
) -> _Weights:
    # 2^(-(t_conv - t)/h) = 2^(-(t_conv - t_newest)/h) * 2^(-(t_newest - t)/h): the first
    # factor is common to every touch and cancels in the normalization, so weights are
    # taken relative to the newest touch (which weighs 1) and never underflow.
    newest = touches[-1].occurred_at
    half_life_us = _microseconds(settings.half_life)
    weights: _Weights = []
    with decimal.localcontext(_DECAY_CONTEXT) as ctx:
        for touch in touches:
            half_lives = Fraction(_microseconds(newest - touch.occurred_at), half_life_us)
            if half_lives > _MAX_HALF_LIVES:
                weights.append(Fraction(0))
            elif half_lives.denominator == 1:
                weights.append(Fraction(1, 2**half_lives.numerator))
            else:
                # 2^-x = e^(-x ln 2): Decimal exp is correctly rounded, so the weight is the
                # same on every platform (unlike float pow), and it is ~5x cheaper than power.
                x = ctx.divide(Decimal(half_lives.numerator), Decimal(half_lives.denominator))
                weights.append(Fraction(ctx.exp(ctx.minus(ctx.multiply(x, _LN2)))))
    return weights


def _position_based(touches: Sequence[JourneyTouch], _c: Conversion, _s: ModelSettings) -> _Weights:
    n = len(touches)
    if n == 1:
        return [Fraction(1)]
    if n == 2:
        return [Fraction(1, 2), Fraction(1, 2)]
    middle = Fraction(1, 5) / (n - 2)
    return [Fraction(2, 5)] + [middle] * (n - 2) + [Fraction(2, 5)]


def _last_at_or_before(touches: Sequence[JourneyTouch], moment: datetime | None) -> int | None:
    """Index of the last touch at or before ``moment`` (None when there is none)."""
    if moment is None:
        return None
    found: int | None = None
    for i, touch in enumerate(touches):
        if touch.occurred_at <= moment:
            found = i
    return found


def _milestone_weights(
    n: int, milestones: Sequence[int | None], milestone_weight: Fraction
) -> _Weights:
    """``milestone_weight`` per present milestone (merged where they coincide), 10 % over the rest.

    Missing milestones and an empty rest leave the raw weights short of 1; the
    normalization then scales every weight up proportionally.
    """
    weights = [Fraction(0)] * n
    for index in milestones:
        if index is not None:
            weights[index] += milestone_weight
    rest = [i for i in range(n) if weights[i] == 0]
    for i in rest:
        weights[i] = _REST / len(rest)
    return weights


def _w_shaped(
    touches: Sequence[JourneyTouch], conversion: Conversion, _s: ModelSettings
) -> _Weights:
    milestones = [
        0,
        _last_at_or_before(touches, conversion.lead_created_at),
        _last_at_or_before(touches, conversion.opportunity_created_at),
    ]
    return _milestone_weights(len(touches), milestones, _W_SHAPED_MILESTONE)


def _full_path(
    touches: Sequence[JourneyTouch], conversion: Conversion, _s: ModelSettings
) -> _Weights:
    milestones = [
        0,
        _last_at_or_before(touches, conversion.lead_created_at),
        _last_at_or_before(touches, conversion.opportunity_created_at),
        len(touches) - 1,
    ]
    return _milestone_weights(len(touches), milestones, _FULL_PATH_MILESTONE)


def _data_driven(
    touches: Sequence[JourneyTouch], conversion: Conversion, settings: ModelSettings
) -> _Weights:
    effects = settings.markov.removal_effects if settings.markov is not None else {}
    per_channel: dict[str, int] = defaultdict(int)
    for touch in touches:
        per_channel[touch.channel] += 1
    weights = [
        max(Fraction(effects.get(t.channel, Decimal(0))), Fraction(0)) / per_channel[t.channel]
        for t in touches
    ]
    if sum(weights) == 0:
        return _linear(touches, conversion, settings)
    return weights


_MODELS: dict[Model, Callable[[Sequence[JourneyTouch], Conversion, ModelSettings], _Weights]] = {
    Model.FIRST_TOUCH: _first_touch,
    Model.LAST_TOUCH: _last_touch,
    Model.LAST_NON_DIRECT: _last_non_direct,
    Model.LINEAR: _linear,
    Model.TIME_DECAY: _time_decay,
    Model.POSITION_BASED: _position_based,
    Model.W_SHAPED: _w_shaped,
    Model.FULL_PATH: _full_path,
    Model.DATA_DRIVEN: _data_driven,
}


def credits(
    model: Model, touches: Iterable[JourneyTouch], conversion: Conversion, settings: ModelSettings
) -> dict[str, Decimal]:
    """Credit per touchpoint_id under ``model``: sums to exactly ``Decimal(1)``, ``{}`` without touches.

    Touches whose credit is zero after quantization are left out.
    """
    eligible = eligible_touches(touches, conversion, settings.lookback)
    return _credits_of(model, eligible, conversion, settings)


def all_credits(
    touches: Iterable[JourneyTouch], conversion: Conversion, settings: ModelSettings
) -> dict[Model, dict[str, Decimal]]:
    """``credits`` under every model, computing the eligible touches once."""
    eligible = eligible_touches(touches, conversion, settings.lookback)
    return {model: _credits_of(model, eligible, conversion, settings) for model in Model}


def _credits_of(
    model: Model, eligible: list[JourneyTouch], conversion: Conversion, settings: ModelSettings
) -> dict[str, Decimal]:
    if not eligible:
        return {}
    weights = _MODELS[model](eligible, conversion, settings)
    units = _largest_remainder(weights, 10**CREDIT_PLACES)
    return {
        touch.touchpoint_id: Decimal(share).scaleb(-CREDIT_PLACES)
        for touch, share in zip(eligible, units, strict=True)
        if share
    }


def _largest_remainder(weights: Sequence[Fraction], total_units: int) -> list[int]:
    """Split ``total_units`` (>= 0) in proportion to ``weights`` so the integer parts add up.

    Each part gets the floor of its exact share; the units left over go one each to the
    largest fractional remainders, ties to the earlier position (callers pass a
    canonical order, so the result never depends on input order). Integer arithmetic
    over a common denominator: exact like Fractions, an order of magnitude faster.
    """
    common = math.lcm(*(w.denominator for w in weights))
    return _largest_remainder_scaled(
        [w.numerator * (common // w.denominator) for w in weights], total_units
    )


def _largest_remainder_scaled(scaled: Sequence[int], total_units: int) -> list[int]:
    """``_largest_remainder`` over integer weights (the same split for proportional weights)."""
    weight_sum = sum(scaled)
    parts: list[int] = []
    remainders: list[int] = []  # numerators over the shared denominator weight_sum
    for weight in scaled:
        part, remainder = divmod(weight * total_units, weight_sum)
        parts.append(part)
        remainders.append(remainder)
    left = total_units - sum(parts)
    if left:
        ranked = sorted(range(len(scaled)), key=lambda i: (-remainders[i], i))
        for i in ranked[:left]:
            parts[i] += 1
    return parts


# --------------------------------------------------------------------------- amounts


def split_amount(
    amount: Decimal, credits: Mapping[str, Decimal], quantum: Decimal = Decimal("0.01")
) -> dict[str, Decimal]:
    """Split ``amount`` in proportion to ``credits`` into multiples of ``quantum`` that add up exactly.

    Largest remainder: every part gets its share rounded down to the quantum, the
    quanta left over go to the largest remainders, ties to the larger credit and then
    the smaller key. A negative amount (a refund) is split as its absolute value and
    negated. Every key of ``credits`` gets a part (possibly zero).
    """
    if not credits:
        raise AttributionInputError("credits is empty: nothing to split the amount over")
    if quantum <= 0:
        raise AttributionInputError(f"quantum must be positive, got {quantum}")
    if any(c < 0 for c in credits.values()):
        raise AttributionInputError("credits must not be negative")
    if sum(credits.values()) == 0:
        raise AttributionInputError("credits sum to zero: nothing to split the amount by")
    units_exact = Fraction(amount) / Fraction(quantum)
    if units_exact.denominator != 1:
        raise AttributionInputError(f"amount {amount} is not a multiple of the quantum {quantum}")
    sign = -1 if units_exact < 0 else 1
    # Canonical order decides the ties: larger credit first, then the key.
    keys = sorted(credits, key=lambda k: (-credits[k], k))
    units = [credits[k].scaleb(CREDIT_PLACES) for k in keys]
    scaled = [int(u) for u in units]
    if all(s == u for s, u in zip(scaled, units, strict=True)):
        # Credits from the models have at most CREDIT_PLACES places: integer weights split
        # exactly like their Fractions, without building any.
        parts = _largest_remainder_scaled(scaled, abs(units_exact.numerator))
    else:
        parts = _largest_remainder([Fraction(credits[k]) for k in keys], abs(units_exact.numerator))
    exponent = quantum.normalize().as_tuple().exponent
    places = exponent if isinstance(exponent, int) else 0
    if quantum == Decimal(1).scaleb(places):
        # A power-of-ten quantum (cents): scaleb gives the same value and exponent as the
        # multiply-and-quantize below, at a fraction of the cost.
        return {
            key: Decimal(sign * part).scaleb(places) for key, part in zip(keys, parts, strict=True)
        }
    return {
        key: (Decimal(sign * part) * quantum).quantize(Decimal(1).scaleb(places))
        for key, part in zip(keys, parts, strict=True)
    }


# --------------------------------------------------------------------------- markov

_START = ("start",)  # tuples never collide with channel names (str)
_CONVERSION = ("conversion",)
_NULL = ("null",)


def fit_markov(journeys: Iterable[tuple[Sequence[str], bool]]) -> MarkovWeights:
    """First-order Markov chain over channel paths; removal effect per channel.

    Each journey is ``start -> c1 -> ... -> cn -> conversion`` (or ``-> null`` when it did
    not convert); transition probabilities are the observed transition counts over the
    counts out of each state (repeats such as ``c -> c`` included; they do not change
    absorption probabilities). ``P`` is the probability of reaching ``conversion`` from
    ``start``. The removal effect of channel ``c`` is ``1 - P_without_c / P``, where
    ``P_without_c`` redirects every transition into ``c`` to ``null``. Without any
    conversion every removal effect is 0.
    """
    counts: dict[object, dict[object, int]] = defaultdict(lambda: defaultdict(int))
    channels: set[str] = set()
    for path, converted in journeys:
        states: list[object] = [_START, *path, _CONVERSION if converted else _NULL]
        channels.update(path)
        for here, there in zip(states, states[1:], strict=False):
            counts[here][there] += 1
    ordered = sorted(channels)
    base = _conversion_probability(counts, ordered, removed=None)
    effects: dict[str, Decimal] = {}
    for channel in ordered:
        if base == 0:
            effect = Fraction(0)
        else:
            effect = 1 - _conversion_probability(counts, ordered, removed=channel) / base
        effects[channel] = _to_decimal(effect, REMOVAL_EFFECT_PLACES)
    return MarkovWeights(removal_effects=effects)


def _conversion_probability(
    counts: Mapping[object, Mapping[object, int]], channels: Sequence[str], removed: str | None
) -> Fraction:
    """Absorption probability in ``conversion`` from ``start``, solving ``(I - Q) x = r`` exactly."""
    transient: list[object] = [_START, *(c for c in channels if c != removed)]
    index = {state: i for i, state in enumerate(transient)}
    n = len(transient)
    # Augmented matrix [I - Q | r]; a transition into the removed channel goes to null.
    matrix = [[Fraction(0)] * (n + 1) for _ in range(n)]
    for state, i in index.items():
        matrix[i][i] += 1
        outgoing = counts.get(state, {})
        total = sum(outgoing.values())
        if total == 0:
            continue  # a state never left: it converts with probability 0
        for target, count in outgoing.items():
            p = Fraction(count, total)
            if target == _CONVERSION:
                matrix[i][n] += p
            elif target in index:
                matrix[i][index[target]] -= p
    solution = _solve(matrix)
    return solution[index[_START]]


def _solve(matrix: list[list[Fraction]]) -> list[Fraction]:
    """Gauss-Jordan elimination on an augmented, non-singular matrix of Fractions."""
    n = len(matrix)
    for col in range(n):
        pivot = next(r for r in range(col, n) if matrix[r][col] != 0)
        matrix[col], matrix[pivot] = matrix[pivot], matrix[col]
        lead = matrix[col][col]
        matrix[col] = [value / lead for value in matrix[col]]
        for r in range(n):
            if r != col and matrix[r][col] != 0:
                factor = matrix[r][col]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[col], strict=True)]
    return [row[n] for row in matrix]


def _to_decimal(value: Fraction, places: int) -> Decimal:
    """``value`` rounded half-even to ``places`` decimal places."""
    scaled = value * 10**places
    return Decimal(round(scaled)).scaleb(-places)


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
