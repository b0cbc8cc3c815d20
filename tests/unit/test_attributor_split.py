"""split_amount's integer fast path splits exactly like the Fraction path it replaces."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from services.attributor.models import _largest_remainder, split_amount

credit = st.integers(min_value=0, max_value=10**12).map(lambda n: Decimal(n).scaleb(-12))


@given(
    st.dictionaries(st.text(min_size=1, max_size=3), credit, min_size=1, max_size=12).filter(
        lambda c: sum(c.values()) > 0
    ),
    st.integers(min_value=-(10**9), max_value=10**9),
)
def test_fast_path_equals_fraction_path(credits: dict[str, Decimal], cents: int) -> None:
    amount = Decimal(cents).scaleb(-2)
    keys = sorted(credits, key=lambda k: (-credits[k], k))
    parts = _largest_remainder([Fraction(credits[k]) for k in keys], abs(cents))
    sign = -1 if cents < 0 else 1
    expected = {k: Decimal(sign * p).scaleb(-2) for k, p in zip(keys, parts, strict=True)}
    assert split_amount(amount, credits) == expected
    assert sum(split_amount(amount, credits).values()) == amount


def test_finer_credits_take_the_fraction_path() -> None:
    # 13 places: not representable as integer units of 1e-12.
    credits = {"a": Decimal("0.3333333333333"), "b": Decimal("0.6666666666667")}
    assert split_amount(Decimal("1.00"), credits) == {"a": Decimal("0.33"), "b": Decimal("0.67")}
