"""Sessionization: inactivity and campaign breaks, deterministic touchpoint IDs, bots, offline."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.settings import IdentitySettings
from services.stitcher.channels import ChannelRules
from services.stitcher.identity import observe
from services.stitcher.sessions import (
    DEFAULT_SESSION_TIMEOUT_MS,
    Hit,
    compact,
    merge_hit,
    sessionize,
    touchpoint_id,
)

pytestmark = pytest.mark.unit

RULES = ChannelRules.default(own_domains=["example.com"])
IDENTITY = IdentitySettings()
MINUTE = 60_000
T0 = 1_760_000_000_000
SITE = "https://www.example.com"


def event(event_id: str, minute: float, **fields: Any) -> dict[str, Any]:
    """A TrackingEvent record (as fastavro decodes it) at T0 + ``minute``."""
    at = T0 + int(minute * MINUTE)
    record: dict[str, Any] = {
        "event_id": event_id,
        "type": "pageview",
        "site_id": "dev",
        "anonymous_id": "anon-1",
        "occurred_at": at,
        "received_at": at,
        "url": f"{SITE}/page",
        "click_ids": {},
        "is_bot": False,
    }
    record.update(fields)
    return record


def hit(event_id: str, minute: float, **fields: Any) -> Hit:
    """The hit of a pageview (never None for a non-bot pageview)."""
    observed = observe(event(event_id, minute, **fields), RULES, IDENTITY).hit
    assert observed is not None
    return observed


def firsts(hits: list[Hit], timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS) -> list[str]:
    return [s.first.event_id for s in sessionize(hits, timeout_ms)]


GOOGLE_CPC = {"url": f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=brand"}
NEWSLETTER = {"url": f"{SITE}/?utm_source=newsletter&utm_medium=email&utm_campaign=nov"}


def test_thirty_minutes_of_inactivity_is_the_edge() -> None:
    hits = [hit("a", 0), hit("b", 30), hit("c", 60.001), hit("d", 61)]
    # b is exactly 30 minutes after a: same session; c is 30 min + 60 ms after b: new one.
    assert firsts(hits) == ["a", "c"]


def test_inactivity_is_measured_from_the_last_hit_not_the_first() -> None:
    hits = [hit(str(i), i * 20) for i in range(10)]  # 3 hours, never 30 minutes idle
    assert firsts(hits) == ["0"]
    session = sessionize(hits)[0]
    assert (session.hit_count, session.last_at) == (10, T0 + 180 * MINUTE)


def test_timeout_is_configurable() -> None:
    hits = [hit("a", 0), hit("b", 10), hit("c", 25)]
    assert firsts(hits, timeout_ms=12 * MINUTE) == ["a", "c"]


def test_a_campaign_change_opens_a_session_without_inactivity() -> None:
    hits = [hit("a", 0), hit("b", 2, **GOOGLE_CPC), hit("c", 4, **NEWSLETTER), hit("d", 5)]
    assert firsts(hits) == ["a", "b", "c"]
    assert [s.first.channel for s in sessionize(hits)] == ["DIRECT", "PAID_SEARCH", "EMAIL"]


def test_the_same_campaign_again_and_direct_hits_do_not_break_a_session() -> None:
    hits = [hit("a", 0, **GOOGLE_CPC), hit("b", 3, **GOOGLE_CPC), hit("c", 6), hit("d", 9)]
    assert firsts(hits) == ["a"]


def test_internal_referrer_with_utm_tags_does_not_break_a_session() -> None:
    banner = {
        "url": f"{SITE}/offer?utm_source=home&utm_medium=banner",
        "referrer": f"{SITE}/",
    }
    hits = [hit("a", 0, **GOOGLE_CPC), hit("b", 1, **banner)]
    assert firsts(hits) == ["a"]


def test_a_new_ad_click_is_a_new_campaign() -> None:
    hits = [
        hit("a", 0, url=f"{SITE}/?gclid=click-1"),
        hit("b", 1, url=f"{SITE}/?gclid=click-1"),
        hit("c", 2, url=f"{SITE}/?gclid=click-2"),
    ]
    assert firsts(hits) == ["a", "c"]


def test_ties_in_time_are_broken_by_event_id_whatever_the_input_order() -> None:
    hits = [hit("b", 0, **NEWSLETTER), hit("a", 0, **GOOGLE_CPC)]
    assert firsts(hits) == firsts(list(reversed(hits))) == ["a", "b"]


def test_touchpoint_ids_are_deterministic_and_scoped_to_the_anonymous_id() -> None:
    first = touchpoint_id("anon-1", "evt-1")
    assert first == touchpoint_id("anon-1", "evt-1")
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != touchpoint_id("anon-2", "evt-1")
    assert first != touchpoint_id("anon-1", "evt-2")
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert touchpoint_id("ab", "c") != touchpoint_id("a", "bc")


def test_bot_events_make_no_hit_and_no_identification() -> None:
    record = event("bot", 0, is_bot=True, type="form_submit", email="bot@example.com")
    observation = observe(record, RULES, IDENTITY)
    assert observation.hit is None and observation.identification is None


def test_offline_touchpoints_are_sessions_of_their_own() -> None:
    call = {
        "type": "offline_touch",
        "url": None,
        "utm_source": "phone",
        "utm_medium": "call",
        "utm_campaign": "inbound",
    }
    hits = [hit("a", 0, **GOOGLE_CPC), hit("call", 5, **call), hit("b", 10), hit("c", 12)]
    sessions = sessionize(hits)
    assert [s.first.event_id for s in sessions] == ["a", "call"]
    offline = sessions[1].first
    assert offline.is_offline and offline.channel == "OFFLINE"
    assert (offline.source, offline.campaign) == ("phone", "inbound")
    # The call does not break the web session: b and c still belong to a's session.
    assert sessions[0].hit_count == 3


def test_two_offline_touches_at_once_are_two_touchpoints() -> None:
    call = {"type": "offline_touch", "url": None, "utm_source": "trade-show"}
    hits = [hit("x", 0, **call), hit("y", 0, **call)]
    assert firsts(hits) == ["x", "y"]


def test_events_without_url_that_are_not_pageviews_open_no_session() -> None:
    identify = event("id", 0, type="identify", url=None, email="jane@example.com")
    observation = observe(identify, RULES, IDENTITY)
    assert observation.hit is None and observation.identification is not None


def test_merge_hit_ignores_a_replayed_event() -> None:
    hits, added = merge_hit([], hit("a", 5))
    hits, added_again = merge_hit(hits, hit("a", 5))
    hits, _ = merge_hit(hits, hit("b", 1))
    assert (added, added_again) == (True, False)
    assert [h.event_id for h in hits] == ["b", "a"]


def test_compact_drops_the_middle_of_a_long_session_but_keeps_its_entry() -> None:
    hits = [hit(f"{i:02}", i * 5) for i in range(13)]  # one hour of reading, every 5 minutes
    kept = compact(hits)
    assert len(kept) < len(hits)
    assert kept[0].event_id == "00" and kept[-1].event_id == "12"
    assert firsts(kept) == firsts(hits) == ["00"]


def test_compact_keeps_campaign_hits_and_session_edges() -> None:
    hits = [hit("a", 0), hit("b", 5), hit("c", 10, **GOOGLE_CPC), hit("d", 50), hit("e", 52)]
    kept = {h.event_id for h in compact(hits)}
    assert {"a", "c", "d"} <= kept
    assert firsts(compact(hits)) == firsts(hits)


# Minutes on a coarse grid make exact 30-minute gaps and ties likely.
MINUTES = st.integers(min_value=0, max_value=36).map(lambda k: k * 5)
TAGS = st.sampled_from([{}, GOOGLE_CPC, NEWSLETTER, {"referrer": "https://news.ycombinator.com/"}])
OFFLINE = st.booleans().map(
    lambda offline: {"type": "offline_touch", "url": None, "utm_source": "phone"} if offline else {}
)


@st.composite
def hit_lists(draw: st.DrawFn) -> list[Hit]:
    count = draw(st.integers(min_value=1, max_value=25))
    out = []
    for index in range(count):
        fields = {**draw(TAGS), **(draw(OFFLINE) if draw(st.integers(0, 9)) == 0 else {})}
        out.append(hit(f"e{index:02}", draw(MINUTES), **fields))
    return out


@settings(max_examples=300, deadline=None)
@given(hits=hit_lists(), extra=hit_lists(), data=st.data())
def test_compaction_never_changes_sessions_now_or_after_more_hits(
    hits: list[Hit], extra: list[Hit], data: st.DataObject
) -> None:
    """Compacting the state, then adding any later hits, gives the same session entries."""
    ordered = sorted(hits, key=lambda h: h.order)
    kept = compact(ordered)
    assert firsts(kept) == firsts(ordered)
    late = [Hit(**{**h.__dict__, "event_id": f"late-{h.event_id}"}) for h in extra]
    late = data.draw(st.permutations(late))
    state, everything = kept, list(ordered)
    for new in late:
        state, _ = merge_hit(state, new)
        state = compact(state)
        everything.append(new)
    assert firsts(state) == firsts(everything)
