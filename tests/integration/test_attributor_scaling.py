"""Two attributors in one group share the lead partitions; a survivor restores the other's leads from ClickHouse."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tests.fixtures.processes import ServiceProcess
from tests.integration.test_attributor import (
    Inputs,
    baseline_ready,
    clickhouse,  # noqa: F401 - fixture
    inputs,  # noqa: F401 - fixture
    proposal,
    revenue,
    rows,
    start_attributor,  # noqa: F401 - fixture
    three_leads,
    wait_for,
)


def test_partitions_move_between_instances_without_losing_a_journey(
    inputs: Inputs,  # noqa: F811
    clickhouse: Any,  # noqa: F811
    start_attributor: Callable[..., ServiceProcess],  # noqa: F811
) -> None:
    three_leads(inputs)
    first = start_attributor()
    second = start_attributor()
    wait_for(
        lambda: baseline_ready(clickhouse), "the three leads attributed by two instances", first
    )
    wait_for(
        lambda: (
            "partitions assigned" in first.tail(400) and "partitions assigned" in second.tail(400)
        ),
        "both instances own partitions",
        second,
    )
    assert second.stop() == 0  # its partitions go to the first instance

    # Late touches for every lead: the first instance must know the whole journeys,
    # including those the second one built, to attribute them right.
    inputs.touch("a0", "alice", -1, "DISPLAY", "criteo", "display", "retarget", "/")
    inputs.touch("b0", "bob", 0.5, "REFERRAL", "partner.example", "referral", None, "/partners")
    wait_for(
        lambda: (
            revenue(clickhouse, "first_touch") == {"Display": Decimal("12000.00")}
            and "Referral" in proposal(clickhouse, "first_touch")
        ),
        "late touches attributed by the surviving instance",
        first,
    )
    # Linear over the full restored journeys: Alice 3 touches, Bob 3 touches.
    assert revenue(clickhouse, "linear") == {
        "Display": Decimal("4000.00"),
        "Paid Search": Decimal("4000.00"),
        "Email": Decimal("4000.00"),
    }
    assert proposal(clickhouse, "linear")["Paid Social"][0] == Decimal("1666.66")
    sums = rows(
        clickhouse,
        "SELECT deal_id, stage, model, sum(credit) AS s FROM attribution_credits_current "
        "GROUP BY lead_id, deal_id, stage, model HAVING s != 1",
    )
    assert sums == []
