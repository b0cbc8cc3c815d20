"""Identity stitching: lead IDs, devices, shared devices, the cap, lookback, retroactive emission."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.avro import AvroCodec
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings
from services.stitcher.channels import ChannelRules
from services.stitcher.identity import (
    DAY_MS,
    AnonymousState,
    Link,
    Step,
    StitchConfig,
    apply_event,
    decode_state,
    encode_state,
    observe,
    stitch,
)
from services.stitcher.sessions import touchpoint_id

pytestmark = pytest.mark.unit

RULES = ChannelRules.default(own_domains=["example.com"])
IDENTITY = IdentitySettings()
CONFIG = StitchConfig()
MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = 1_760_000_000_000
SITE = "https://www.example.com"
GOOGLE_CPC = {"url": f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=brand"}
LINKEDIN = {"url": f"{SITE}/blog", "referrer": "https://www.linkedin.com/feed/"}
NEWSLETTER = {"url": f"{SITE}/?utm_source=newsletter&utm_medium=email"}
JANE = lead_id_for_email("jane@example.com", IDENTITY)
BOB = lead_id_for_email("bob@example.com", IDENTITY)


def event(anonymous_id: str, event_id: str, at: int, **fields: Any) -> dict[str, Any]:
    """A TrackingEvent record as fastavro decodes it."""
    record: dict[str, Any] = {
        "event_id": event_id,
        "type": "pageview",
        "site_id": "dev",
        "anonymous_id": anonymous_id,
        "occurred_at": at,
        "received_at": at,
        "url": f"{SITE}/page",
        "click_ids": {},
        "is_bot": False,
    }
    record.update(fields)
    return record


def identify(anonymous_id: str, event_id: str, at: int, email: str) -> dict[str, Any]:
    return event(anonymous_id, event_id, at, type="identify", url=None, email=email)


@dataclass
class Stitcher:
    """The pure core driven like the app drives it: one state per anonymous ID, emissions kept."""

    config: StitchConfig = CONFIG
    states: dict[str, AnonymousState] = field(default_factory=dict)
    published: list[dict[str, Any]] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    late: int = 0

    def feed(self, *records: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply records in order; returns the Touchpoint records emitted."""
        out: list[dict[str, Any]] = []
        for record in records:
            observation = observe(record, RULES, IDENTITY)
            anonymous_id = record["anonymous_id"]
            state = self.states.get(anonymous_id, AnonymousState())
            # Round-trip the state through its changelog encoding, as a restore does.
            state = decode_state(encode_state(state))
            step: Step = apply_event(
                state, anonymous_id, observation.hit, observation.identification, self.config
            )
            self.late += step.too_late
            self.states[anonymous_id] = step.state
            out.extend(e.to_record() for e in step.touchpoints)
            if step.link is not None:
                self.links[anonymous_id] = step.link
        self.published.extend(out)
        return out

    def net(self) -> dict[tuple[str, str], dict[str, Any]]:
        """What a consumer holds after applying every emission: (touchpoint ID, lead) -> record."""
        held: dict[tuple[str, str], dict[str, Any]] = {}
        for record in self.published:
            key = (record["touchpoint_id"], record["lead_id"])
            if record["retracted"]:
                held.pop(key, None)
            else:
                held[key] = record
        return held

    def leads(self) -> dict[str, str]:
        """Touchpoint ID -> lead of the net set (each touchpoint held by one lead at most)."""
        net = self.net()
        assert len({tid for tid, _ in net}) == len(net), "a touchpoint held by two leads"
        return dict(net.keys())


def test_the_lead_id_is_the_keyed_hash_of_the_normalized_email() -> None:
    observation = observe(identify("a", "i1", T0, "  Jane@EXAMPLE.com "), RULES, IDENTITY)
    assert observation.identification is not None
    assert observation.identification.lead_id == JANE
    assert lead_id_for_email("jane@example.com", IDENTITY) == JANE
    assert "jane" not in JANE


def test_an_invalid_email_identifies_nobody_but_keeps_the_hit() -> None:
    record = event("a", "f1", T0, type="form_submit", email="not-an-address")
    observation = observe(record, RULES, IDENTITY)
    assert observation.invalid_email and observation.identification is None
    assert observation.hit is not None


def test_anonymous_history_is_emitted_retroactively_when_the_visitor_identifies() -> None:
    stitcher = Stitcher()
    assert stitcher.feed(event("a", "p1", T0, **GOOGLE_CPC)) == []
    assert stitcher.feed(event("a", "p2", T0 + 2 * HOUR, **LINKEDIN)) == []
    emitted = stitcher.feed(identify("a", "i1", T0 + 3 * HOUR, "jane@example.com"))
    assert [(r["touchpoint_id"], r["lead_id"], r["channel"]) for r in emitted] == [
        (touchpoint_id("a", "p1"), JANE, "PAID_SEARCH"),
        (touchpoint_id("a", "p2"), JANE, "ORGANIC_SOCIAL"),
    ]
    assert not any(r["retracted"] for r in emitted)
    # Later touchpoints are emitted as they come; hits inside a session emit nothing.
    assert stitcher.feed(event("a", "p3", T0 + 2 * HOUR + 5 * MINUTE)) == []
    later = stitcher.feed(event("a", "p4", T0 + 5 * HOUR, **NEWSLETTER))
    assert [(r["touchpoint_id"], r["channel"]) for r in later] == [
        (touchpoint_id("a", "p4"), "EMAIL")
    ]
    link = stitcher.links["a"]
    assert (link.lead_id, link.valid_from, link.identified_by, link.shared) == (
        JANE,
        T0 + 3 * HOUR,
        "i1",
        False,
    )


def test_a_replayed_event_emits_nothing_again() -> None:
    stitcher = Stitcher()
    records = [event("a", "p1", T0), identify("a", "i1", T0 + HOUR, "jane@example.com")]
    first = stitcher.feed(*records)
    assert len(first) == 1
    assert stitcher.feed(*records) == []


def test_one_lead_many_anonymous_ids() -> None:
    stitcher = Stitcher()
    stitcher.feed(
        event("laptop", "l1", T0, **GOOGLE_CPC),
        event("phone", "m1", T0 + HOUR, **LINKEDIN),
        event("tablet", "t1", T0 + 2 * HOUR, **NEWSLETTER),
        identify("phone", "i1", T0 + 3 * HOUR, "jane@example.com"),
        identify("laptop", "i2", T0 + 4 * HOUR, "Jane@Example.com"),
    )
    assert stitcher.leads() == {
        touchpoint_id("laptop", "l1"): JANE,
        touchpoint_id("phone", "m1"): JANE,
    }
    assert {a: link.lead_id for a, link in stitcher.links.items()} == {
        "laptop": JANE,
        "phone": JANE,
    }


def test_shared_device_switch_from_lead_a_to_lead_b() -> None:
    stitcher = Stitcher()
    stitcher.feed(
        event("pc", "p1", T0, **GOOGLE_CPC),
        identify("pc", "i-jane", T0 + HOUR, "jane@example.com"),
        event("pc", "p2", T0 + 2 * HOUR, **LINKEDIN),
        identify("pc", "i-bob", T0 + 3 * HOUR, "bob@example.com"),
        event("pc", "p3", T0 + 4 * HOUR, **NEWSLETTER),
    )
    assert stitcher.leads() == {
        touchpoint_id("pc", "p1"): JANE,
        touchpoint_id("pc", "p2"): JANE,
        touchpoint_id("pc", "p3"): BOB,
    }
    link = stitcher.links["pc"]
    assert (link.lead_id, link.valid_from, link.link_count) == (BOB, T0 + 3 * HOUR, 2)


def test_a_late_switch_moves_touchpoints_with_a_retraction_for_the_old_lead() -> None:
    stitcher = Stitcher()
    stitcher.feed(
        event("pc", "p1", T0, **GOOGLE_CPC),
        identify("pc", "i-jane", T0 + HOUR, "jane@example.com"),
        event("pc", "p2", T0 + 3 * HOUR, **LINKEDIN),
    )
    moved = stitcher.feed(identify("pc", "i-bob", T0 + 2 * HOUR, "bob@example.com"))
    p2 = touchpoint_id("pc", "p2")
    assert [(r["touchpoint_id"], r["lead_id"], r["retracted"]) for r in moved] == [
        (p2, JANE, True),
        (p2, BOB, False),
    ]
    # The retraction carries the whole touchpoint, so the old lead's consumer can find it.
    assert moved[0]["channel"] == moved[1]["channel"] == "ORGANIC_SOCIAL"
    assert stitcher.leads()[p2] == BOB


def test_the_same_lead_again_does_not_count_towards_the_cap() -> None:
    config = StitchConfig(max_leads_per_anonymous_id=2)
    stitcher = Stitcher(config)
    for index, email in enumerate(["jane@example.com", "bob@example.com"] * 3):
        stitcher.feed(identify("pc", f"i{index}", T0 + index * HOUR, email))
    assert not stitcher.links["pc"].shared
    assert stitcher.links["pc"].link_count == 2


def test_more_leads_than_the_cap_marks_the_device_shared_and_stops_stitching() -> None:
    config = StitchConfig(max_leads_per_anonymous_id=2)
    stitcher = Stitcher(config)
    stitcher.feed(
        event("kiosk", "p1", T0),
        identify("kiosk", "i1", T0 + HOUR, "jane@example.com"),
        event("kiosk", "p2", T0 + 2 * HOUR, **GOOGLE_CPC),
        identify("kiosk", "i2", T0 + 3 * HOUR, "bob@example.com"),
        event("kiosk", "p3", T0 + 4 * HOUR, **LINKEDIN),
        identify("kiosk", "i3", T0 + 5 * HOUR, "carol@example.com"),
        event("kiosk", "p4", T0 + 6 * HOUR, **NEWSLETTER),
        identify("kiosk", "i4", T0 + 7 * HOUR, "dave@example.com"),
        event("kiosk", "p5", T0 + 8 * HOUR, **GOOGLE_CPC),
    )
    # Before the third lead it was stitched; from the third lead on nothing is.
    assert stitcher.leads() == {
        touchpoint_id("kiosk", "p1"): JANE,
        touchpoint_id("kiosk", "p2"): JANE,
        touchpoint_id("kiosk", "p3"): BOB,
    }
    link = stitcher.links["kiosk"]
    assert link.shared and link.link_count == 4


def test_a_late_identification_that_passes_the_cap_retracts_what_came_after_it() -> None:
    config = StitchConfig(max_leads_per_anonymous_id=1)
    stitcher = Stitcher(config)
    stitcher.feed(
        identify("pc", "i1", T0, "jane@example.com"),
        event("pc", "p1", T0 + HOUR),
        event("pc", "p2", T0 + 3 * HOUR, **GOOGLE_CPC),
    )
    retracted = stitcher.feed(identify("pc", "i2", T0 + 2 * HOUR, "bob@example.com"))
    assert [(r["touchpoint_id"], r["lead_id"], r["retracted"]) for r in retracted] == [
        (touchpoint_id("pc", "p2"), JANE, True)
    ]
    assert stitcher.links["pc"].shared


@pytest.mark.parametrize(
    ("before_ms", "stitched"),
    [(90 * DAY_MS, True), (90 * DAY_MS + 1, False), (89 * DAY_MS, True)],
)
def test_lookback_edge(before_ms: int, stitched: bool) -> None:
    identified_at = T0 + 100 * DAY_MS
    stitcher = Stitcher()
    stitcher.feed(
        event("a", "old", identified_at - before_ms, **GOOGLE_CPC),
        identify("a", "i1", identified_at, "jane@example.com"),
    )
    assert (touchpoint_id("a", "old") in stitcher.leads()) is stitched


def test_a_hit_older_than_the_lookback_from_the_newest_event_is_too_late() -> None:
    stitcher = Stitcher()
    stitcher.feed(identify("a", "i1", T0 + 100 * DAY_MS, "jane@example.com"))
    assert stitcher.feed(event("a", "old", T0 + 10 * DAY_MS - 1, **GOOGLE_CPC)) == []
    assert stitcher.late == 1
    assert stitcher.feed(event("a", "edge", T0 + 10 * DAY_MS, **GOOGLE_CPC)) != []


def test_old_sessions_are_evicted_and_their_touchpoints_stay_published() -> None:
    config = StitchConfig(lookback_ms=DAY_MS)
    stitcher = Stitcher(config)
    stitcher.feed(
        identify("a", "i1", T0, "jane@example.com"),
        event("a", "d0", T0 + HOUR, **GOOGLE_CPC),
        event("a", "d3", T0 + 3 * DAY_MS, **LINKEDIN),
    )
    state = stitcher.states["a"]
    assert [h.event_id for h in state.hits] == ["d3"]
    assert state.horizon == T0 + HOUR + CONFIG.session_timeout_ms
    assert set(stitcher.leads()) == {touchpoint_id("a", "d0"), touchpoint_id("a", "d3")}
    # A hit that would have joined the evicted session arrives too late and changes nothing.
    assert stitcher.feed(event("a", "late", T0 + HOUR + 10 * MINUTE)) == []
    assert stitcher.late == 1


def test_hits_per_anonymous_id_are_capped_by_evicting_whole_old_sessions() -> None:
    config = StitchConfig(max_hits_per_anonymous_id=10)
    stitcher = Stitcher(config)
    records = [event("a", f"p{i:03}", T0 + i * HOUR, **GOOGLE_CPC) for i in range(40)]
    stitcher.feed(*records)
    assert len(stitcher.states["a"].hits) <= 10
    # Identifying afterwards stitches what is still kept, newest sessions first to go last.
    emitted = stitcher.feed(identify("a", "i1", T0 + 40 * HOUR, "jane@example.com"))
    assert 1 <= len(emitted) <= 10
    assert emitted[-1]["touchpoint_id"] == touchpoint_id("a", "p039")


def test_identifications_per_anonymous_id_are_capped() -> None:
    config = StitchConfig(max_identifications_per_anonymous_id=10)
    stitcher = Stitcher(config)
    stitcher.feed(*[identify("a", f"i{i:03}", T0 + i, "jane@example.com") for i in range(30)])
    assert len(stitcher.states["a"].identifications) == 10


def test_emitted_records_encode_as_touchpoint_and_link_avro() -> None:
    stitcher = Stitcher()
    emitted = stitcher.feed(
        event("a", "p1", T0, url=f"{SITE}/?gclid=abc"),
        identify("a", "i1", T0 + HOUR, "jane@example.com"),
    )
    touchpoints = AvroCodec.for_topic("touchpoints.stitched")
    decoded = touchpoints.decode(touchpoints.encode(emitted[0]))
    assert decoded["click_ids"] == {"gclid": "abc"}
    assert decoded["channel"] == "PAID_SEARCH" and decoded["landing_page"] == f"{SITE}/"
    links = AvroCodec.for_topic("identity.links")
    assert links.decode(links.encode(stitcher.links["a"].to_record()))["lead_id"] == JANE


def test_state_survives_its_table_encoding() -> None:
    stitcher = Stitcher()
    stitcher.feed(
        event("a", "p1", T0, url=f"{SITE}/?gclid=abc", referrer="https://www.google.com/"),
        event("a", "call", T0 + MINUTE, type="offline_touch", url=None, utm_source="phone"),
        identify("a", "i1", T0 + HOUR, "jane@example.com"),
    )
    state = stitcher.states["a"]
    assert decode_state(encode_state(state)) == state
    assert decode_state(None) == AnonymousState()


# The property: arrival order does not matter. Two devices, three leads, a cap of two.
PROPERTY_CONFIG = StitchConfig(max_leads_per_anonymous_id=2, lookback_ms=2 * DAY_MS)
TAGS = [{}, GOOGLE_CPC, LINKEDIN, NEWSLETTER, {"url": f"{SITE}/?gclid=g2"}]
EMAILS = ["jane@example.com", "bob@example.com", "carol@example.com"]


@st.composite
def journeys(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=30))
    records = []
    for index in range(count):
        anonymous_id = draw(st.sampled_from(["laptop", "phone"]))
        # 5-minute grid over 40 hours: exact 30-minute gaps and ties in time happen.
        at = T0 + draw(st.integers(0, 480)) * 5 * MINUTE
        kind = draw(st.sampled_from(["hit", "hit", "hit", "identify", "form", "offline"]))
        event_id = f"e{index:02}"
        if kind == "hit":
            records.append(event(anonymous_id, event_id, at, **draw(st.sampled_from(TAGS))))
        elif kind == "identify":
            records.append(identify(anonymous_id, event_id, at, draw(st.sampled_from(EMAILS))))
        elif kind == "form":
            email = draw(st.sampled_from(EMAILS))
            records.append(event(anonymous_id, event_id, at, type="form_submit", email=email))
        else:
            records.append(
                event(anonymous_id, event_id, at, type="offline_touch", url=None, utm_source="call")
            )
    return records


@settings(max_examples=400, deadline=None)
@given(records=journeys(), data=st.data())
def test_any_arrival_order_gives_the_same_stitched_touchpoints(
    records: list[dict[str, Any]], data: st.DataObject
) -> None:
    in_order = Stitcher(PROPERTY_CONFIG)
    in_order.feed(*sorted(records, key=lambda r: (r["occurred_at"], r["event_id"])))
    shuffled = Stitcher(PROPERTY_CONFIG)
    arrival = data.draw(st.permutations(records))
    # Some events arrive twice (at-least-once delivery), at any point.
    replays = data.draw(st.lists(st.sampled_from(records), max_size=5))
    for record in [*arrival, *replays]:
        shuffled.feed(record)
    assert shuffled.late == in_order.late == 0
    assert shuffled.net() == in_order.net()
    # And both equal the pure function of the whole set, per anonymous ID.
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for anonymous_id in {r["anonymous_id"] for r in records}:
        observations = [
            observe(r, RULES, IDENTITY) for r in records if r["anonymous_id"] == anonymous_id
        ]
        result = stitch(
            anonymous_id,
            [o.hit for o in observations if o.hit is not None],
            [o.identification for o in observations if o.identification is not None],
            PROPERTY_CONFIG,
        )
        for tid, touchpoint in result.items():
            expected[(tid, touchpoint.lead_id)] = touchpoint.to_record()
    assert shuffled.net() == expected
    # The identity links converge too.
    assert shuffled.links == in_order.links
