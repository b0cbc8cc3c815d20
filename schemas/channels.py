"""The default channel grouping: Avro symbols (Touchpoint.channel) and the names people read."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    """A channel of the default grouping; ``.name`` is the Avro symbol, ``.value`` the display name."""

    PAID_SEARCH = "Paid Search"
    ORGANIC_SEARCH = "Organic Search"
    PAID_SOCIAL = "Paid Social"
    ORGANIC_SOCIAL = "Organic Social"
    EMAIL = "Email"
    REFERRAL = "Referral"
    DISPLAY = "Display"
    AFFILIATE = "Affiliate"
    DIRECT = "Direct"
    OFFLINE = "Offline"
    OTHER = "Other"

    @classmethod
    def from_symbol(cls, symbol: str) -> Channel:
        """The channel of an Avro enum symbol such as ``PAID_SEARCH``."""
        return cls[symbol]


# Canonical deal stages and their funnel order (DealStageChanged.stage / stage_order).
# Custom stages are configured in crm_ingest with an order of their own.
CANONICAL_STAGE_ORDER: dict[str, int] = {
    "lead": 10,
    "mql": 20,
    "sql": 30,
    "opportunity": 40,
    "proposal": 50,
    "negotiation": 60,
    "closed_won": 70,
    "closed_lost": 70,
}
