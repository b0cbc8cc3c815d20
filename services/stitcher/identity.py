"""Identity stitching: one anonymous ID's sessions and identifications to touchpoints of leads."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import msgspec

from services.common.leads import InvalidEmailError, lead_id_for_email
from services.common.settings import IdentitySettings
from services.stitcher.channels import ChannelRules, TrafficSource, classify
from services.stitcher.sessions import (
    DEFAULT_SESSION_TIMEOUT_MS,
    Hit,
    Session,
    compact,
    merge_hit,
    sessionize,
    touchpoint_id,
)

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class StitchConfig:
    """The knobs of stitching; the defaults are DESIGN.md's."""

    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS
    lookback_ms: int = 90 * DAY_MS
    max_leads_per_anonymous_id: int = 5
    max_hits_per_anonymous_id: int = 500
    max_identifications_per_anonymous_id: int = 100


@dataclass(frozen=True)
class Identification:
    """An event that tied the anonymous ID to a lead (identify, form submit with an e-mail)."""

    event_id: str
    occurred_at: int  # epoch milliseconds
    lead_id: str
    site_id: str

    @property
    def order(self) -> tuple[int, str]:
        """Time, then event ID: a total order that does not depend on arrival."""
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True)
class Link:
    """The anonymous ID's current link, as published on identity.links."""

    anonymous_id: str
    lead_id: str
    valid_from: int
    identified_by: str
    link_count: int
    shared: bool
    site_id: str | None

    def to_record(self) -> dict[str, Any]:
        """The IdentityLink Avro record."""
        return {
            "anonymous_id": self.anonymous_id,
            "lead_id": self.lead_id,
            "valid_from": self.valid_from,
            "identified_by": self.identified_by,
            "link_count": self.link_count,
            "shared": self.shared,
            "site_id": self.site_id,
        }


@dataclass(frozen=True)
class LeadTimeline:
    """Which lead an anonymous ID's activity at a given time belongs to.

    Rules (DESIGN.md, "Identity rules"): activity at or after an identification
    belongs to that identification's lead until the next identification (a shared
    device switching from lead A to lead B gives A before the switch and B after);
    activity before the first identification belongs to the first lead when it lies
    inside the lookback window (retroactive stitching); from the identification that
    links the anonymous ID to more than ``max_leads`` distinct leads on, the ID is
    shared and nothing is stitched.
    """

    identifications: tuple[Identification, ...]  # sorted by order
    lookback_ms: int
    shared_from: int | None
    distinct_leads: int

    @classmethod
    def of(cls, identifications: Iterable[Identification], config: StitchConfig) -> LeadTimeline:
        """The timeline of a set of identifications (any order)."""
        ordered = tuple(sorted(identifications, key=lambda i: i.order))
        seen: set[str] = set()
        shared_from: int | None = None
        for ident in ordered:
            seen.add(ident.lead_id)
            if shared_from is None and len(seen) > config.max_leads_per_anonymous_id:
                shared_from = ident.occurred_at
        return cls(ordered, config.lookback_ms, shared_from, len(seen))

    @property
    def shared(self) -> bool:
        """True once the anonymous ID passed the leads-per-device cap."""
        return self.shared_from is not None

    def lead_at(self, occurred_at: int) -> str | None:
        """The lead of activity at ``occurred_at``, or None when it stays anonymous."""
        if not self.identifications:
            return None
        if self.shared_from is not None and occurred_at >= self.shared_from:
            return None
        times = [ident.occurred_at for ident in self.identifications]
        index = bisect.bisect_right(times, occurred_at) - 1
        if index >= 0:
            return self.identifications[index].lead_id
        first = self.identifications[0]
        if first.occurred_at - occurred_at <= self.lookback_ms:
            return first.lead_id
        return None

    def current_link(self, anonymous_id: str) -> Link | None:
        """The link to publish: the latest lead, valid from the start of its latest run."""
        if not self.identifications:
            return None
        start = len(self.identifications) - 1
        lead = self.identifications[start].lead_id
        while start > 0 and self.identifications[start - 1].lead_id == lead:
            start -= 1
        opener = self.identifications[start]
        return Link(
            anonymous_id=anonymous_id,
            lead_id=lead,
            valid_from=opener.occurred_at,
            identified_by=opener.event_id,
            link_count=self.distinct_leads,
            shared=self.shared,
            site_id=opener.site_id,
        )


@dataclass(frozen=True)
class StitchedTouchpoint:
    """A session's entry credited to a lead."""

    touchpoint_id: str
    lead_id: str
    anonymous_id: str
    hit: Hit

    def to_record(self, *, retracted: bool = False) -> dict[str, Any]:
        """The Touchpoint Avro record (``retracted`` copies tell the old lead to drop it)."""
        hit = self.hit
        return {
            "touchpoint_id": self.touchpoint_id,
            "lead_id": self.lead_id,
            "anonymous_id": self.anonymous_id,
            "site_id": hit.site_id,
            "occurred_at": hit.occurred_at,
            "channel": hit.channel,
            "source": hit.source,
            "medium": hit.medium,
            "campaign": hit.campaign,
            "term": hit.term,
            "content": hit.content,
            "click_ids": dict(hit.click_ids),
            "referrer_host": hit.referrer_host,
            "landing_page": hit.landing_page,
            "is_offline": hit.is_offline,
            "retracted": retracted,
        }


def stitch(
    anonymous_id: str,
    hits: Iterable[Hit],
    identifications: Iterable[Identification],
    config: StitchConfig = StitchConfig(),
) -> dict[str, StitchedTouchpoint]:
    """Every touchpoint of one anonymous ID that belongs to a lead, by touchpoint ID.

    A pure function of the *sets* of hits and identifications: any arrival order
    gives the same result.
    """
    timeline = LeadTimeline.of(identifications, config)
    return _stitch_sessions(anonymous_id, sessionize(hits, config.session_timeout_ms), timeline)


def _stitch_sessions(
    anonymous_id: str, sessions: Sequence[Session], timeline: LeadTimeline
) -> dict[str, StitchedTouchpoint]:
    stitched: dict[str, StitchedTouchpoint] = {}
    for session in sessions:
        lead = timeline.lead_at(session.first.occurred_at)
        if lead is None:
            continue
        tid = touchpoint_id(anonymous_id, session.first.event_id)
        stitched[tid] = StitchedTouchpoint(tid, lead, anonymous_id, session.first)
    return stitched


@dataclass(frozen=True)
class AnonymousState:
    """What the stitcher keeps per anonymous ID (a stitcher.state changelog value).

    ``emitted`` maps each touchpoint currently published to (lead ID, first event ID),
    so the next event's recomputation publishes only the difference. ``horizon`` is
    the time up to which history was evicted: hits at or before it arrive too late.
    """

    hits: tuple[Hit, ...] = ()
    identifications: tuple[Identification, ...] = ()
    emitted: dict[str, tuple[str, str]] = field(default_factory=dict)
    link: Link | None = None
    watermark: int | None = None
    horizon: int | None = None


@dataclass(frozen=True)
class Emission:
    """One Touchpoint to publish on touchpoints.stitched, keyed by its lead."""

    touchpoint: StitchedTouchpoint
    retracted: bool = False

    @property
    def key(self) -> str:
        return self.touchpoint.lead_id

    def to_record(self) -> dict[str, Any]:
        return self.touchpoint.to_record(retracted=self.retracted)


@dataclass(frozen=True)
class Step:
    """The outcome of one event: the new state and what to publish."""

    state: AnonymousState
    touchpoints: tuple[Emission, ...] = ()
    link: Link | None = None  # a changed link to publish on identity.links
    too_late: bool = False  # the hit was older than the state's horizon and was dropped
    duplicate: bool = False  # nothing new: the same event was seen before


def _is_too_late(state: AnonymousState, hit: Hit, config: StitchConfig) -> bool:
    """A hit older than the lookback window (from the newest event) or inside evicted history."""
    if state.horizon is not None and hit.occurred_at <= state.horizon:
        return True
    return state.watermark is not None and hit.occurred_at < state.watermark - config.lookback_ms


def apply_event(
    state: AnonymousState,
    anonymous_id: str,
    hit: Hit | None,
    identification: Identification | None,
    config: StitchConfig = StitchConfig(),
) -> Step:
    """Add one event's hit and/or identification and return what changed.

    The published touchpoints always converge to ``stitch()`` of everything kept: a
    touchpoint that is new is emitted for its lead; one whose lead changed (a late
    identification, a device switch) is emitted for the new lead and as a retracted
    copy for the old one; one that no longer exists (a late hit merged two sessions)
    is retracted. Afterwards the state is bounded: hits that can never matter are
    compacted away, and whole sessions older than the lookback window (from the
    newest event of this ID) or beyond the per-ID hit cap are evicted; their already
    published touchpoints stay as they are.
    """
    hits = state.hits
    idents = state.identifications
    too_late = False
    changed = False
    if hit is not None:
        if _is_too_late(state, hit, config):
            too_late = True
        else:
            merged, added = merge_hit(hits, hit)
            if added:
                hits, changed = tuple(merged), True
    if identification is not None and all(i.event_id != identification.event_id for i in idents):
        ordered = sorted([*idents, identification], key=lambda i: i.order)
        idents = tuple(ordered[-config.max_identifications_per_anonymous_id :])
        changed = True
    if not changed:
        return Step(state=state, too_late=too_late, duplicate=not too_late)

    times = [t for t in (state.watermark,) if t is not None]
    times += [h.occurred_at for h in hits[-1:]] + [i.occurred_at for i in idents[-1:]]
    watermark = max(times)

    timeline = LeadTimeline.of(idents, config)
    sessions = sessionize(hits, config.session_timeout_ms)
    current = _stitch_sessions(anonymous_id, sessions, timeline)
    emissions = _difference(state.emitted, current, hits, anonymous_id)
    emitted = {tid: (tp.lead_id, tp.hit.event_id) for tid, tp in current.items()}

    link = timeline.current_link(anonymous_id)
    link_changed = link is not None and link != state.link

    hits, emitted, horizon = _bound(hits, emitted, anonymous_id, watermark, state.horizon, config)
    new_state = replace(
        state,
        hits=hits,
        identifications=idents,
        emitted=emitted,
        link=link,
        watermark=watermark,
        horizon=horizon,
    )
    return Step(
        state=new_state,
        touchpoints=tuple(emissions),
        link=link if link_changed else None,
        too_late=too_late,
    )


def _difference(
    emitted: dict[str, tuple[str, str]],
    current: dict[str, StitchedTouchpoint],
    hits: Sequence[Hit],
    anonymous_id: str,
) -> list[Emission]:
    by_event = {h.event_id: h for h in hits}
    out: list[Emission] = []
    for tid, (old_lead, first_event) in sorted(emitted.items()):
        now = current.get(tid)
        if now is not None and now.lead_id == old_lead:
            continue
        old_hit = by_event.get(first_event)
        # A published touchpoint's first hit is a session start, which compaction and
        # eviction never drop while it is published, so it is always found here.
        if old_hit is not None:
            old = StitchedTouchpoint(tid, old_lead, anonymous_id, old_hit)
            out.append(Emission(old, retracted=True))
    for tid, tp in sorted(current.items(), key=lambda item: item[1].hit.order):
        previous = emitted.get(tid)
        if previous is None or previous[0] != tp.lead_id:
            out.append(Emission(tp))
    return out


def _bound(
    hits: tuple[Hit, ...],
    emitted: dict[str, tuple[str, str]],
    anonymous_id: str,
    watermark: int,
    horizon: int | None,
    config: StitchConfig,
) -> tuple[tuple[Hit, ...], dict[str, tuple[str, str]], int | None]:
    """Compact, then evict whole old sessions (age, then count); returns hits, emitted, horizon."""
    kept = compact(hits, config.session_timeout_ms)
    sessions = sessionize(kept, config.session_timeout_ms)
    age_floor = watermark - config.lookback_ms
    index = 0
    while index < len(sessions) and sessions[index].last_at < age_floor:
        index += 1
    remaining = len(kept) - sum(s.hit_count for s in sessions[:index])
    while index < len(sessions) - 1 and remaining > config.max_hits_per_anonymous_id:
        remaining -= sessions[index].hit_count
        index += 1
    if index == 0:
        return tuple(kept), emitted, horizon
    evicted = sessions[:index]
    # Browser sessions are contiguous runs of the sorted browser hits, so evicting the
    # oldest ones is cutting before the first kept browser session; offline hits are
    # sessions of their own and interleave, so they are evicted one by one.
    next_browser = next((s.first.order for s in sessions[index:] if not s.first.is_offline), None)
    offline_gone = {s.first.event_id for s in evicted if s.first.is_offline}
    kept = [
        h
        for h in kept
        if (h.event_id not in offline_gone)
        if h.is_offline or (next_browser is not None and h.order >= next_browser)
    ]
    gone = {touchpoint_id(anonymous_id, s.first.event_id) for s in evicted}
    emitted = {tid: value for tid, value in emitted.items() if tid not in gone}
    # A hit within the timeout of an evicted session would have joined it: too late now.
    new_horizon = max(s.last_at for s in evicted) + config.session_timeout_ms
    return tuple(kept), emitted, max(new_horizon, horizon if horizon is not None else new_horizon)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(AnonymousState)


def encode_state(state: AnonymousState) -> bytes:
    """The state as compact MessagePack (the stitcher.state value bytes)."""
    return _ENCODER.encode(state)


def decode_state(data: bytes | None) -> AnonymousState:
    """The state from ``encode_state`` bytes; an empty state for None."""
    if data is None:
        return AnonymousState()
    return _DECODER.decode(data)


@dataclass(frozen=True)
class Observation:
    """What one tracking event contributes: a hit, an identification, both or neither."""

    hit: Hit | None
    identification: Identification | None
    invalid_email: bool = False


def epoch_ms(value: int | datetime) -> int:
    """Epoch milliseconds of an Avro timestamp-millis value (fastavro decodes a datetime)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def observe(
    event: Mapping[str, Any], rules: ChannelRules, identity: IdentitySettings
) -> Observation:
    """The hit and identification of a TrackingEvent record.

    Bot events contribute nothing. An ``offline_touch`` is a touchpoint as it comes.
    Browser events with a URL (and every pageview) can open a session. Any event with
    an e-mail address identifies its lead, whose ID is the keyed hash of the address:
    the address itself goes no further.
    """
    if event.get("is_bot"):
        return Observation(None, None)
    event_id = str(event["event_id"])
    occurred_at = epoch_ms(event["occurred_at"])
    site_id = str(event["site_id"])
    is_offline = event["type"] == "offline_touch"
    hit: Hit | None = None
    if is_offline or event.get("url") is not None or event["type"] == "pageview":
        source = TrafficSource(
            landing_url=event.get("url"),
            referrer=event.get("referrer"),
            utm_source=event.get("utm_source"),
            utm_medium=event.get("utm_medium"),
            utm_campaign=event.get("utm_campaign"),
            utm_term=event.get("utm_term"),
            utm_content=event.get("utm_content"),
            click_ids=event.get("click_ids") or {},
            is_offline=is_offline,
        )
        hit = Hit.classified(
            event_id, occurred_at, site_id, classify(source, rules), is_offline=is_offline
        )
    email = event.get("email")
    if not email:
        return Observation(hit, None)
    try:
        lead_id = lead_id_for_email(str(email), identity)
    except InvalidEmailError:
        return Observation(hit, None, invalid_email=True)
    return Observation(hit, Identification(event_id, occurred_at, lead_id, site_id))
