"""A second, deliberately plain implementation of the attribution models, written from their definitions.

The ground-truth check must catch a bug in services/attributor/models.py, so it cannot
use that module to compute what is expected. These functions follow the definitions in
services/attributor/README.md ("Models") with the simplest arithmetic that is exact:
weights as Fractions (time decay as 60-digit Decimals), credits quantized to 12 places
by largest remainder, amounts split to the cent by largest remainder.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from services.attributor.models import Conversion, JourneyTouch, Model

CREDIT_UNITS = 10**12  # credits are multiples of 1e-12
_PRECISION = decimal.Context(prec=60)


def _eligible(
    touches: Iterable[JourneyTouch], conversion: Conversion, lookback: timedelta
) -> list[JourneyTouch]:
    start = conversion.occurred_at - lookback
    unique = {t.touchpoint_id: t for t in touches}
    chosen = [t for t in unique.values() if start <= t.occurred_at <= conversion.occurred_at]
    return sorted(chosen, key=lambda t: (t.occurred_at, t.touchpoint_id))


def _index_at_or_before(touches: Sequence[JourneyTouch], moment: object) -> int | None:
    if moment is None:
        return None
    found = None
    for i, touch in enumerate(touches):
        if touch.occurred_at <= moment:  # type: ignore[operator]
            found = i
    return found


def _weights(
    model: Model, touches: Sequence[JourneyTouch], conversion: Conversion, half_life: timedelta
) -> list[Fraction]:
    n = len(touches)
    one_hot = [Fraction(0)] * n
    if model is Model.FIRST_TOUCH:
        one_hot[0] = Fraction(1)
        return one_hot
    if model is Model.LAST_TOUCH:
        one_hot[-1] = Fraction(1)
        return one_hot
    if model is Model.LAST_NON_DIRECT:
        candidates = [i for i, t in enumerate(touches) if t.channel != "DIRECT"] or [n - 1]
        one_hot[candidates[-1]] = Fraction(1)
        return one_hot
    if model is Model.LINEAR:
        return [Fraction(1)] * n
    if model is Model.POSITION_BASED:
        if n <= 2:
            return [Fraction(1)] * n
        return [Fraction(2, 5)] + [Fraction(1, 5) / (n - 2)] * (n - 2) + [Fraction(2, 5)]
    if model is Model.TIME_DECAY:
        weights = []
        for touch in touches:
            exponent = Fraction(
                (conversion.occurred_at - touch.occurred_at) // timedelta(microseconds=1),
                half_life // timedelta(microseconds=1),
            )
            if exponent.denominator == 1:
                weights.append(Fraction(1, 2**exponent.numerator))
            else:
                x = _PRECISION.divide(Decimal(exponent.numerator), Decimal(exponent.denominator))
                weights.append(Fraction(_PRECISION.power(Decimal(2), -x)))
        return weights
    if model in (Model.W_SHAPED, Model.FULL_PATH):
        milestones = [
            0,
            _index_at_or_before(touches, conversion.lead_created_at),
            _index_at_or_before(touches, conversion.opportunity_created_at),
        ]
        share = Fraction(3, 10)
        if model is Model.FULL_PATH:
            milestones.append(n - 1)
            share = Fraction(9, 40)
        weights = [Fraction(0)] * n
        for index in milestones:
            if index is not None:
                weights[index] += share
        others = [i for i in range(n) if weights[i] == 0]
        for i in others:
            weights[i] = Fraction(1, 10) / len(others)
        return weights
    raise ValueError(f"no reference implementation of {model}")


def reference_credits(
    model: Model,
    touches: Iterable[JourneyTouch],
    conversion: Conversion,
    lookback: timedelta = timedelta(days=90),
    half_life: timedelta = timedelta(days=7),
) -> dict[str, Decimal]:
    """Credit per touchpoint under ``model`` by the README's definitions; ``{}`` without touches."""
    eligible = _eligible(touches, conversion, lookback)
    if not eligible:
        return {}
    weights = _weights(model, eligible, conversion, half_life)
    total = sum(weights)
    shares = [w / total * CREDIT_UNITS for w in weights]
    units = [int(s) for s in shares]  # floor: shares are non-negative
    left = CREDIT_UNITS - sum(units)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - units[i]), i))
    for i in order[:left]:
        units[i] += 1
    return {
        t.touchpoint_id: Decimal(u).scaleb(-12) for t, u in zip(eligible, units, strict=True) if u
    }


def reference_split(amount: Decimal, credits: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """``amount`` over ``credits`` in cents adding up exactly: floors, then the leftover cents
    one each to the largest remainders (ties: larger credit, then smaller touchpoint ID)."""
    cents = int(amount * 100)
    total = sum(credits.values())
    exact = {key: Fraction(credit) / Fraction(total) * cents for key, credit in credits.items()}
    parts = {key: int(value) for key, value in exact.items()}
    left = cents - sum(parts.values())
    order = sorted(credits, key=lambda k: (-(exact[k] - parts[k]), -credits[k], k))
    for key in order[:left]:
        parts[key] += 1
    return {key: (Decimal(part) / 100).quantize(Decimal("0.01")) for key, part in parts.items()}
