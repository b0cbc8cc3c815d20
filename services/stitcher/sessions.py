"""Sessionization per anonymous ID: hits to sessions, each session's first hit a touchpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.stitcher.channels import Classification

DEFAULT_SESSION_TIMEOUT_MS = 30 * 60 * 1000

CampaignKey = tuple[str | None, ...]


@dataclass(frozen=True)
class Hit:
    """One non-bot event that can open a session, with its channel already classified.

    Classifying once, when the event arrives, keeps the state small and the
    recomputation cheap; ``campaign_key`` is ``()`` for Direct and internal hits,
    which never break a session.
    """

    event_id: str
    occurred_at: int  # epoch milliseconds
    site_id: str
    channel: str  # schemas.channels.Channel symbol (Avro enum)
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None
    referrer_host: str | None = None
    landing_page: str | None = None
    click_ids: dict[str, str] = field(default_factory=dict)
    campaign_key: CampaignKey = ()
    is_offline: bool = False

    @classmethod
    def classified(
        cls,
        event_id: str,
        occurred_at: int,
        site_id: str,
        classification: Classification,
        *,
        is_offline: bool = False,
    ) -> Hit:
        """A hit from an event's identity and its channel classification."""
        return cls(
            event_id=event_id,
            occurred_at=occurred_at,
            site_id=site_id,
            channel=classification.channel.name,
            source=classification.source,
            medium=classification.medium,
            campaign=classification.campaign,
            term=classification.term,
            content=classification.content,
            referrer_host=classification.referrer_host,
            landing_page=classification.landing_page,
            click_ids=dict(classification.click_ids),
            campaign_key=() if is_offline else tuple(classification.campaign_key()),
            is_offline=is_offline,
        )

    @property
    def order(self) -> tuple[int, str]:
        """Total order of hits: time, then event ID, so ties never depend on arrival order."""
        return (self.occurred_at, self.event_id)


@dataclass(frozen=True)
class Session:
    """A run of hits of one anonymous ID; ``first`` is its entry and makes the touchpoint."""

    first: Hit
    last_at: int
    hit_count: int


def touchpoint_id(anonymous_id: str, first_event_id: str) -> str:
    """Deterministic touchpoint ID: SHA-256 of the anonymous ID and the session's first event ID."""
    digest = hashlib.sha256(f"{anonymous_id}\x1f{first_event_id}".encode()).hexdigest()
    return digest[:32]


def starts_session(
    previous: Hit | None, session_key: CampaignKey, hit: Hit, timeout_ms: int
) -> bool:
    """True when ``hit`` opens a new session after ``previous`` (the session's last hit).

    A new session starts after ``timeout_ms`` of inactivity, or when the hit carries a
    campaign (non-empty key) other than the one the current session started with.
    """
    if previous is None:
        return True
    if hit.occurred_at - previous.occurred_at > timeout_ms:
        return True
    return bool(hit.campaign_key) and hit.campaign_key != session_key


def sessionize(hits: Iterable[Hit], timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS) -> list[Session]:
    """Sessions of one anonymous ID's hits, in time order; the same for any order of ``hits``.

    Offline hits (calls, events posted server-side) are sessions of their own and do not
    take part in the inactivity or campaign rules of browser hits.
    """
    ordered = sorted(hits, key=lambda h: h.order)
    sessions: list[Session] = []
    first: Hit | None = None
    previous: Hit | None = None
    count = 0
    for hit in ordered:
        if hit.is_offline:
            sessions.append(Session(first=hit, last_at=hit.occurred_at, hit_count=1))
            continue
        if first is None or starts_session(previous, first.campaign_key, hit, timeout_ms):
            if first is not None and previous is not None:
                sessions.append(Session(first=first, last_at=previous.occurred_at, hit_count=count))
            first, count = hit, 0
        previous = hit
        count += 1
    if first is not None and previous is not None:
        sessions.append(Session(first=first, last_at=previous.occurred_at, hit_count=count))
    sessions.sort(key=lambda s: s.first.order)
    return sessions


def compact(hits: Sequence[Hit], timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS) -> list[Hit]:
    """``hits`` (sorted) without the ones that can never change any session, now or later.

    A hit is dropped when it has no campaign (empty key), is not a session's first hit,
    and its kept predecessor and its successor lie within the inactivity timeout of each
    other in the same session: any hit that arrives later between those two is then
    within the timeout of both, so the sessions (and touchpoint IDs) come out the same
    with or without the dropped hit. This keeps a long browsing session's state small.
    """
    kept: list[Hit] = []
    browser = [h for h in hits if not h.is_offline]
    offline = [h for h in hits if h.is_offline]
    session_key: CampaignKey = ()
    for index, hit in enumerate(browser):
        previous = kept[-1] if kept else None
        opens = starts_session(previous, session_key, hit, timeout_ms)
        if opens:
            session_key = hit.campaign_key
            kept.append(hit)
            continue
        following = browser[index + 1] if index + 1 < len(browser) else None
        removable = (
            not hit.campaign_key
            and previous is not None
            and following is not None
            and not starts_session(previous, session_key, following, timeout_ms)
        )
        if not removable:
            kept.append(hit)
    return sorted([*kept, *offline], key=lambda h: h.order)


def merge_hit(hits: Sequence[Hit], hit: Hit) -> tuple[list[Hit], bool]:
    """``hits`` (sorted, unique event IDs) with ``hit`` added; False when it was already there."""
    if any(existing.event_id == hit.event_id for existing in hits):
        return list(hits), False
    merged = sorted([*hits, hit], key=lambda h: h.order)
    return merged, True
