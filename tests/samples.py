"""One valid record per topic, for codec and round-trip tests."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def tracking_event(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "evt-1",
        "type": "pageview",
        "site_id": "site-1",
        "anonymous_id": "anon-1",
        "session_id": "sess-1",
        "occurred_at": T0,
        "sent_at": T0,
        "received_at": T0,
        "url": "https://www.example.com/pricing?utm_source=google&utm_medium=cpc",
        "title": "Pricing",
        "referrer": "https://www.google.com/",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "brand",
        "utm_term": "closed loop attribution",
        "utm_content": "ad-1",
        "click_ids": {"gclid": "Cj0KCQ"},
        "event_name": None,
        "email": None,
        "traits": {},
        "properties": {"plan": "pro"},
        "value": Decimal("12.50"),
        "currency": "EUR",
        "ip": "203.0.113.0",
        "user_agent": "Mozilla/5.0",
        "browser": "Firefox",
        "os": "Linux",
        "device_type": "desktop",
        "is_bot": False,
    }
    record.update(overrides)
    return record


SAMPLES: dict[str, dict[str, Any]] = {
    "events.raw": tracking_event(),
    "events.invalid": {
        "rejected_at": T0,
        "endpoint": "/v1/events",
        "site_id": "site-1",
        "anonymous_id": None,
        "reason": "invalid_field",
        "field": "type",
        "message": "unknown event type",
        "batch_index": 3,
        "content_type": "application/json",
        "raw": b'{"type":"nope"}',
    },
    "identity.links": {
        "anonymous_id": "anon-1",
        "lead_id": "ab" * 32,
        "valid_from": T0,
        "identified_by": "evt-2",
        "link_count": 1,
        "shared": False,
        "site_id": "site-1",
    },
    "touchpoints.stitched": {
        "touchpoint_id": "tp-1",
        "lead_id": "ab" * 32,
        "anonymous_id": "anon-1",
        "site_id": "site-1",
        "occurred_at": T0,
        "channel": "PAID_SEARCH",
        "source": "google",
        "medium": "cpc",
        "campaign": "brand",
        "term": "attribution",
        "content": None,
        "click_ids": {"gclid": "x"},
        "referrer_host": "www.google.com",
        "landing_page": "https://www.example.com/pricing",
        "is_offline": False,
        "retracted": False,
    },
    "crm.deal_stages": {
        "event_id": "deal-evt-1",
        "crm": "hubspot",
        "deal_id": "123",
        "lead_id": "ab" * 32,
        "pipeline": "default",
        "stage": "proposal",
        "stage_order": 50,
        "crm_stage": "presentationscheduled",
        "amount": Decimal("15000.00"),
        "currency": "USD",
        "is_won": False,
        "is_lost": False,
        "occurred_at": T0,
        "received_at": T0,
        "deal_name": "Acme renewal",
    },
    "crm.invalid": {
        "received_at": T0,
        "crm": "pipedrive",
        "reason": "missing_field",
        "field": "data.id",
        "message": "deal id is missing",
        "content_type": "application/json",
        "delivery_id": None,
        "raw": b"{}",
    },
}
