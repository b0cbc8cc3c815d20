"""Enrichment rules of the collector: IPs, times and clock skew, campaign fields, type rules, devices."""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from services.collector.enrich import (
    EventRejected,
    RandomUuids,
    RequestFacts,
    enrich,
    new_event_id,
    parse_device,
    parse_moment,
    truncate_ip,
)
from services.collector.events import Event

RECEIVED = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _facts(**overrides: Any) -> RequestFacts:
    values: dict[str, Any] = {
        "site_id": "site",
        "received_at_ms": RECEIVED,
        "ip": "203.0.113.77",
        "user_agent": None,
        "new_event_id": lambda: "generated",
    }
    values.update(overrides)
    return RequestFacts(**values)


def _event(**fields: Any) -> Event:
    return msgspec.convert({"type": "pageview", "anonymous_id": "a", **fields}, Event)


def _rejected(event: Event, facts: RequestFacts | None = None) -> tuple[str | None, str]:
    with pytest.raises(EventRejected) as info:
        enrich(event, facts or _facts())
    return info.value.problem.field, info.value.problem.message


@pytest.mark.parametrize(
    ("address", "truncated"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.1.2.255", "10.1.2.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("::ffff:198.51.100.23", "198.51.100.0"),
        (" 192.0.2.1 ", "192.0.2.0"),
        ("not-an-ip", None),
        ("", None),
        (None, None),
    ],
)
def test_ip_is_truncated_before_storage(address: str | None, truncated: str | None) -> None:
    assert truncate_ip(address) == truncated


@pytest.mark.parametrize(
    ("value", "millis"),
    [
        ("2026-01-01T00:00:00Z", RECEIVED),
        ("2026-01-01T01:00:00+01:00", RECEIVED),
        ("2026-01-01T00:00:00.250+00:00", RECEIVED + 250),
        (RECEIVED, RECEIVED),
        (str(RECEIVED), RECEIVED),
    ],
)
def test_moments_in_iso_or_epoch_millis(value: str | int, millis: int) -> None:
    assert parse_moment(value, "timestamp") == millis


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-01-01T00:00:00", "UTC offset"),
        ("yesterday", "ISO-8601"),
        (1_767_225_600, "outside"),  # seconds, not milliseconds
        (-5, "outside"),
    ],
)
def test_bad_moments_are_named(value: str | int, problem: str) -> None:
    field, message = _rejected(_event(timestamp=value))
    assert field == "timestamp"
    assert problem in message


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The client clock runs 10 minutes behind: it says sent 10:00, we received at 10:10.
    event = _event(timestamp=RECEIVED - 600_000 - 3_000, sent_at=RECEIVED - 600_000)
    record = enrich(event, _facts())
    assert record["occurred_at"] == RECEIVED - 3_000
    assert record["sent_at"] == RECEIVED - 600_000
    assert record["received_at"] == RECEIVED


def test_batch_sent_at_applies_to_members_without_their_own() -> None:
    event = _event(timestamp=RECEIVED - 5_000)
    record = enrich(event, _facts(batch_sent_at=RECEIVED - 1_000))
    assert record["occurred_at"] == RECEIVED - 4_000


def test_no_timestamp_means_received_at_even_with_sent_at() -> None:
    record = enrich(_event(sent_at=RECEIVED - 99_000), _facts())
    assert record["occurred_at"] == RECEIVED


def test_backdated_events_are_kept_but_the_future_is_refused() -> None:
    weeks_ago = RECEIVED - 21 * 24 * 3600 * 1000
    assert enrich(_event(timestamp=weeks_ago), _facts())["occurred_at"] == weeks_ago
    field, _ = _rejected(_event(timestamp=RECEIVED + 2 * 24 * 3600 * 1000))
    assert field == "timestamp"


def test_campaign_fields_from_url_unless_given() -> None:
    url = "https://e.com/p?utm_source=google&utm_medium=cpc&utm_term=a+b%21&gclid=G1&fbclid=F1&x=1#top"
    record = enrich(_event(url=url, utm_source="bing", click_ids={"gclid": "G2"}), _facts())
    assert record["utm_source"] == "bing"
    assert record["utm_medium"] == "cpc"
    assert record["utm_term"] == "a b!"
    assert record["utm_campaign"] is None
    assert record["click_ids"] == {"gclid": "G2", "fbclid": "F1"}
    assert record["url"] == url


def test_urls_without_campaign_parameters_give_none() -> None:
    record = enrich(_event(url="https://e.com/p?page=2&q=a+b#x"), _facts())
    assert record["click_ids"] == {}
    assert [record[name] for name in ("utm_source", "utm_medium", "utm_campaign")] == [None] * 3


def test_event_id_kept_or_generated() -> None:
    assert enrich(_event(event_id="client-1"), _facts())["event_id"] == "client-1"
    assert enrich(_event(), _facts())["event_id"] == "generated"
    generated = enrich(_event(), RequestFacts(site_id="s", received_at_ms=RECEIVED))["event_id"]
    assert uuid.UUID(generated).version == 4


def test_generated_ids_are_canonical_random_uuids() -> None:
    ids = RandomUuids(per_refill=8)
    drawn = [ids() for _ in range(5000)]  # many refills of the pool
    assert len(set(drawn)) == len(drawn)
    for value in drawn:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, value)
    assert {value[19] for value in drawn} == set("89ab")
    fixed = (8, 13, 14, 18, 23)  # dashes and the version digit
    assert all(len({value[i] for value in drawn}) > 1 for i in range(36) if i not in fixed)


def test_forked_children_do_not_reuse_the_parents_pool() -> None:
    new_event_id()  # the shared generator's pool now holds 255 more IDs
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(writer, new_event_id().encode())
        os._exit(0)
    os.close(writer)
    from_child = os.read(reader, 64).decode()
    os.waitpid(child, 0)
    assert uuid.UUID(from_child).version == 4
    assert from_child != new_event_id()  # without the at-fork hook both draw the same next ID


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "identify"}, "email"),
        ({"type": "identify", "email": "not an email"}, "email"),
        ({"type": "custom"}, "event_name"),
        ({"type": "offline_touch"}, "utm_source"),
        ({"type": "conversion", "value": "10.00"}, "currency"),
        ({"type": "conversion", "value": "10.005", "currency": "EUR"}, "value"),
        ({"type": "conversion", "value": "ten", "currency": "EUR"}, "value"),
        ({"type": "conversion", "value": "1e20", "currency": "EUR"}, "value"),
    ],
)
def test_type_rules_name_the_field(fields: dict[str, Any], field: str) -> None:
    assert _rejected(_event(**fields))[0] == field


def test_conversion_value_traits_and_properties() -> None:
    record = enrich(
        _event(
            type="conversion",
            event_name="order",
            value=19.9,
            currency="usd",
            properties={"n": 2, "ok": True, "s": "x", "l": [1]},
        ),
        _facts(),
    )
    assert record["value"] == Decimal("19.90")
    assert record["currency"] == "USD"
    assert record["properties"] == {"n": "2", "ok": "true", "s": "x", "l": "[1]"}
    identify = enrich(_event(type="identify", email=" a@b.co ", traits={"age": 3}), _facts())
    assert (identify["email"], identify["traits"]) == ("a@b.co", {"age": "3"})


@pytest.mark.parametrize(
    ("agent", "browser", "os", "device_type", "is_bot"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "Windows",
            "desktop",
            False,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
            "Mobile Safari",
            "iOS",
            "mobile",
            False,
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
            "Mobile Safari",
            "iOS",
            "tablet",
            False,
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot",
            None,
            "bot",
            True,
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "HeadlessChrome",
            "Linux",
            "bot",
            True,
        ),
        ("python-requests/2.32.3", "Python Requests", None, "bot", True),
    ],
)
def test_user_agents_parsed_and_bots_flagged(
    agent: str, browser: str, os: str | None, device_type: str, is_bot: bool
) -> None:
    device = parse_device(agent)
    assert (device.browser, device.os, device.device_type, device.is_bot) == (
        browser,
        os,
        device_type,
        is_bot,
    )
    record = enrich(_event(), _facts(user_agent=agent))
    assert record["is_bot"] is is_bot  # flagged, never dropped
