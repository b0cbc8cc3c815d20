"""Seeded simulation of visitors, journeys, leads and deals, with the ground truth of who came from where."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

from schemas.channels import CANONICAL_STAGE_ORDER, Channel
from services.common.errors import ConfigurationError
from services.stitcher.sessions import touchpoint_id

SITE_URL = "https://www.acme-analytics.io"
CRMS = ("generic", "hubspot", "pipedrive", "salesforce")
TRUTH_VERSION = 1

# Whole seconds everywhere: the pipeline stores milliseconds, so nothing is lost or rounded.
_T = TypeVar("_T")
_SECOND = timedelta(seconds=1)
_MIN_SESSION_GAP = timedelta(hours=2)  # far above the 30-minute session timeout


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: the seed decides everything, ``end`` anchors simulated time."""

    end: datetime
    seed: int = 42
    visitors: int = 1000
    days: int = 70
    site_url: str = SITE_URL
    bot_share: float = 0.06
    cross_device_share: float = 0.25
    cookie_loss_rate: float = 0.08
    crm_only_deal_share: float = 0.02
    crms: tuple[str, ...] = ("generic",)

    def __post_init__(self) -> None:
        if self.end.tzinfo is None:
            raise ConfigurationError("end must be timezone-aware")
        if self.visitors < 1:
            raise ConfigurationError(f"visitors must be at least 1, got {self.visitors}")
        if not 7 <= self.days <= 80:
            # Journeys stay inside the 90-day stitching lookback so the truth is unambiguous.
            raise ConfigurationError(f"days must be between 7 and 80, got {self.days}")
        if not self.crms or any(crm not in CRMS for crm in self.crms):
            raise ConfigurationError(f"crms must be a non-empty subset of {CRMS}, got {self.crms}")
        for name in ("bot_share", "cross_device_share", "cookie_loss_rate", "crm_only_deal_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigurationError(f"{name} must be between 0 and 1, got {value}")
        object.__setattr__(self, "end", self.end.astimezone(UTC).replace(microsecond=0))

    @property
    def start(self) -> datetime:
        """The earliest simulated moment."""
        return self.end - timedelta(days=self.days)


def default_end(now: datetime | None = None) -> datetime:
    """The hour before ``now`` (UTC), so every simulated timestamp is in the past."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


# --------------------------------------------------------------------------- what is sent


@dataclass(frozen=True)
class Beacon:
    """One tracking event as the collector receives it, with the User-Agent header it comes with."""

    at: datetime
    user_agent: str
    event: Mapping[str, Any]
    bot: bool = False


@dataclass(frozen=True)
class StageChange:
    """A deal entering a canonical stage, as the CRM reports it."""

    at: datetime
    event_id: str
    crm: str
    deal_id: str
    deal_name: str
    email: str  # as the CRM holds it (case may differ from the form fill)
    pipeline: str
    stage: str
    amount: Decimal | None
    currency: str


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class TruthTouchpoint:
    """A session's entry as the simulator made it: the channel and campaign it really came from."""

    touchpoint_id: str
    anonymous_id: str
    first_event_id: str
    occurred_at: datetime
    channel: str  # Channel symbol
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    content: str | None
    landing_page: str | None
    is_offline: bool
    person: int
    kind: str  # the simulator's traffic kind, e.g. google_ads


@dataclass(frozen=True)
class TruthIdentification:
    """An event that carried the person's e-mail address on an anonymous ID."""

    event_id: str
    anonymous_id: str
    email: str  # as typed into the form
    occurred_at: datetime
    person: int


@dataclass(frozen=True)
class TruthStage:
    """One stage a deal entered, with the amount the CRM held then."""

    event_id: str
    stage: str
    occurred_at: datetime
    amount: Decimal | None


@dataclass(frozen=True)
class TruthDeal:
    """A deal and the person (by e-mail) it belongs to."""

    deal_id: str
    person: int
    email: str
    crm: str
    pipeline: str
    currency: str
    stages: tuple[TruthStage, ...]


@dataclass(frozen=True)
class TruthPerson:
    """A simulated visitor: a human with devices and maybe an e-mail, or a bot."""

    person: int
    email: str | None
    anonymous_ids: tuple[str, ...]
    is_bot: bool


@dataclass(frozen=True)
class GroundTruth:
    """Everything the pipeline should conclude, written by the simulator as it generated traffic."""

    seed: int
    visitors: int
    start: datetime
    end: datetime
    people: tuple[TruthPerson, ...]
    touchpoints: tuple[TruthTouchpoint, ...]
    identifications: tuple[TruthIdentification, ...]
    deals: tuple[TruthDeal, ...]
    beacons: int
    bot_beacons: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times ISO-8601 UTC, amounts as strings)."""
        return {
            "version": TRUTH_VERSION,
            "seed": self.seed,
            "visitors": self.visitors,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "beacons": self.beacons,
            "bot_beacons": self.bot_beacons,
            "people": [
                {
                    "person": p.person,
                    "email": p.email,
                    "anonymous_ids": list(p.anonymous_ids),
                    "is_bot": p.is_bot,
                }
                for p in self.people
            ],
            "touchpoints": [
                {
                    "touchpoint_id": t.touchpoint_id,
                    "anonymous_id": t.anonymous_id,
                    "first_event_id": t.first_event_id,
                    "occurred_at": _iso(t.occurred_at),
                    "channel": t.channel,
                    "source": t.source,
                    "medium": t.medium,
                    "campaign": t.campaign,
                    "term": t.term,
                    "content": t.content,
                    "landing_page": t.landing_page,
                    "is_offline": t.is_offline,
                    "person": t.person,
                    "kind": t.kind,
                }
                for t in self.touchpoints
            ],
            "identifications": [
                {
                    "event_id": i.event_id,
                    "anonymous_id": i.anonymous_id,
                    "email": i.email,
                    "occurred_at": _iso(i.occurred_at),
                    "person": i.person,
                }
                for i in self.identifications
            ],
            "deals": [
                {
                    "deal_id": d.deal_id,
                    "person": d.person,
                    "email": d.email,
                    "crm": d.crm,
                    "pipeline": d.pipeline,
                    "currency": d.currency,
                    "stages": [
                        {
                            "event_id": s.event_id,
                            "stage": s.stage,
                            "occurred_at": _iso(s.occurred_at),
                            "amount": None if s.amount is None else str(s.amount),
                        }
                        for s in d.stages
                    ],
                }
                for d in self.deals
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroundTruth:
        """The ground truth of a ``to_json`` dict."""
        if data.get("version") != TRUTH_VERSION:
            raise ConfigurationError(
                f"ground truth version {data.get('version')!r} is not {TRUTH_VERSION}"
            )
        return cls(
            seed=int(data["seed"]),
            visitors=int(data["visitors"]),
            start=_parse(data["start"]),
            end=_parse(data["end"]),
            beacons=int(data["beacons"]),
            bot_beacons=int(data["bot_beacons"]),
            people=tuple(
                TruthPerson(p["person"], p["email"], tuple(p["anonymous_ids"]), p["is_bot"])
                for p in data["people"]
            ),
            touchpoints=tuple(
                TruthTouchpoint(**{**t, "occurred_at": _parse(t["occurred_at"])})
                for t in data["touchpoints"]
            ),
            identifications=tuple(
                TruthIdentification(**{**i, "occurred_at": _parse(i["occurred_at"])})
                for i in data["identifications"]
            ),
            deals=tuple(
                TruthDeal(
                    deal_id=d["deal_id"],
                    person=d["person"],
                    email=d["email"],
                    crm=d["crm"],
                    pipeline=d["pipeline"],
                    currency=d["currency"],
                    stages=tuple(
                        TruthStage(
                            s["event_id"],
                            s["stage"],
                            _parse(s["occurred_at"]),
                            None if s["amount"] is None else Decimal(s["amount"]),
                        )
                        for s in d["stages"]
                    ),
                )
                for d in data["deals"]
            ),
        )


@dataclass(frozen=True)
class Simulation:
    """The generated traffic (in time order) and its ground truth."""

    config: SimulationConfig
    beacons: tuple[Beacon, ...]
    stage_changes: tuple[StageChange, ...]
    truth: GroundTruth


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --------------------------------------------------------------------------- traffic catalogue


@dataclass(frozen=True)
class Landing:
    """How a session arrives, and the channel/source/medium/campaign it must be classified as."""

    kind: str
    path: str
    query: Mapping[str, str]
    referrer: str | None
    channel: Channel
    source: str | None
    medium: str | None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None
    # UTM tags sent as explicit event fields (as a server-side tracker would), not in the URL
    explicit_tags: Mapping[str, str] = field(default_factory=dict)


_LANDING_PAGES = (
    "/",
    "/pricing",
    "/features/attribution",
    "/features/crm-sync",
    "/integrations/hubspot",
    "/customers",
)
_BLOG_PAGES = (
    "/blog/closed-loop-attribution",
    "/blog/utm-best-practices",
    "/blog/multi-touch-vs-first-touch",
    "/blog/b2b-pipeline-metrics",
)
_INNER_PAGES = (
    "/pricing",
    "/features/attribution",
    "/features/crm-sync",
    "/integrations/salesforce",
    "/customers",
    "/docs/getting-started",
    "/about",
    "/security",
)
_FORMS = {
    "/demo": "demo-request",
    "/whitepaper": "whitepaper-download",
    "/webinar": "webinar-signup",
}

_GOOGLE_CAMPAIGNS = (
    ("brand_search", ("acme analytics", "acme attribution")),
    ("competitor_search", ("dreamdata alternative", "hockeystack alternative")),
    ("generic_search", ("b2b revenue attribution", "closed loop marketing software")),
)
_SEARCH_REFERRERS = (
    ("https://www.google.com/", "google", 70),
    ("https://www.bing.com/", "bing", 15),
    ("https://duckduckgo.com/", "duckduckgo", 10),
    ("https://www.ecosia.org/", "ecosia", 5),
)
_SOCIAL_REFERRERS = (
    ("https://www.linkedin.com/feed/", "linkedin", 50),
    ("https://t.co/x7Yq2", "twitter", 20),
    ("https://www.reddit.com/r/marketing/", "reddit", 15),
)
_REFERRAL_SITES = (
    "https://www.g2.com/products/acme-analytics/reviews",
    "https://www.capterra.com/p/acme-analytics/",
    "https://blog.revops-weekly.com/best-attribution-tools",
    "https://www.saastr.com/attribution-stack/",
)
_NEWSLETTERS = (
    ("newsletter", "newsletter_2026_09"),
    ("newsletter", "newsletter_2026_10"),
    ("hs_email", "nurture_sequence_a"),
    ("hs_email", "product_update_v3"),
)


def _token(rng: random.Random, length: int = 20) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(length))


def _google_ads(rng: random.Random) -> Landing:
    campaign, terms = rng.choice(_GOOGLE_CAMPAIGNS)
    gclid = "Cj0KCQ" + _token(rng)
    page = rng.choice(("/", "/pricing", "/features/attribution"))
    if rng.random() < 0.2:
        # Auto-tagging only: the gclid alone says Google Ads, no campaign name reaches us.
        return Landing(
            "google_ads", page, {"gclid": gclid}, "https://www.google.com/",
            Channel.PAID_SEARCH, "google", "cpc",
        )  # fmt: skip
    term = rng.choice(terms)
    content = rng.choice(("rsa_v1", "rsa_v2"))
    query = {
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": campaign,
        "utm_term": term,
        "utm_content": content,
        "gclid": gclid,
    }
    return Landing(
        "google_ads", page, query, "https://www.google.com/",
        Channel.PAID_SEARCH, "google", "cpc", campaign, term, content,
    )  # fmt: skip


def _bing_ads(rng: random.Random) -> Landing:
    campaign, terms = rng.choice(_GOOGLE_CAMPAIGNS)
    term = rng.choice(terms)
    query = {
        "utm_source": "bing",
        "utm_medium": "cpc",
        "utm_campaign": campaign,
        "utm_term": term,
        "msclkid": _token(rng, 32).lower(),
    }
    return Landing(
        "bing_ads", "/pricing", query, "https://www.bing.com/",
        Channel.PAID_SEARCH, "bing", "cpc", campaign, term,
    )  # fmt: skip


def _organic_search(rng: random.Random) -> Landing:
    referrer, engine = _weighted(rng, [(r[:2], r[2]) for r in _SEARCH_REFERRERS])
    page = rng.choice(_BLOG_PAGES + ("/",))
    return Landing("organic_search", page, {}, referrer, Channel.ORGANIC_SEARCH, engine, "organic")


def _linkedin_ads(rng: random.Random) -> Landing:
    campaign = rng.choice(("abm_q4_revops_leaders", "webinar_attribution_101"))
    content = rng.choice(("carousel_a", "single_image_b", "video_c"))
    query = {
        "utm_source": "linkedin",
        "utm_medium": "paid_social",
        "utm_campaign": campaign,
        "utm_content": content,
        "li_fat_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }
    return Landing(
        "linkedin_ads", rng.choice(("/webinar", "/features/attribution")), query,
        "https://www.linkedin.com/", Channel.PAID_SOCIAL, "linkedin", "paid_social",
        campaign, None, content,
    )  # fmt: skip


def _facebook_ads(rng: random.Random) -> Landing:
    campaign = rng.choice(("retargeting_q4", "lookalike_saas_founders"))
    query = {
        "utm_source": "facebook",
        "utm_medium": "cpc",
        "utm_campaign": campaign,
        "fbclid": "IwAR" + _token(rng, 24),
    }
    return Landing(
        "facebook_ads", "/", query, "https://m.facebook.com/",
        Channel.PAID_SOCIAL, "facebook", "cpc", campaign,
    )  # fmt: skip


def _organic_social(rng: random.Random) -> Landing:
    page = rng.choice(_BLOG_PAGES)
    if rng.random() < 0.2:
        # A Facebook post: Meta appends fbclid to organic outbound links too.
        query = {"fbclid": "IwAR" + _token(rng, 24)}
        return Landing(
            "organic_social", page, query, "https://l.facebook.com/",
            Channel.ORGANIC_SOCIAL, "facebook", "social",
        )  # fmt: skip
    referrer, network = _weighted(rng, [(r[:2], r[2]) for r in _SOCIAL_REFERRERS])
    return Landing("organic_social", page, {}, referrer, Channel.ORGANIC_SOCIAL, network, "social")


def _newsletter(rng: random.Random) -> Landing:
    source, campaign = rng.choice(_NEWSLETTERS)
    tags = {"utm_source": source, "utm_medium": "email", "utm_campaign": campaign}
    page = rng.choice(_BLOG_PAGES + ("/webinar",))
    if rng.random() < 0.3:
        return Landing(
            "newsletter", page, {}, None, Channel.EMAIL, source, "email", campaign,
            explicit_tags=tags,
        )  # fmt: skip
    return Landing("newsletter", page, tags, None, Channel.EMAIL, source, "email", campaign)


def _referral(rng: random.Random) -> Landing:
    referrer = rng.choice(_REFERRAL_SITES)
    host = referrer.split("/")[2].removeprefix("www.")
    page = rng.choice(("/", "/customers", "/pricing"))
    return Landing("referral", page, {}, referrer, Channel.REFERRAL, host, "referral")


def _direct(rng: random.Random) -> Landing:
    page = rng.choice(("/", "/", "/pricing", "/docs/getting-started"))
    return Landing("direct", page, {}, None, Channel.DIRECT, "(direct)", "(none)")


def _affiliate(rng: random.Random) -> Landing:
    partner = rng.choice(("revops_collective", "martech_stack_reviews", "b2b_growth_podcast"))
    query = {
        "utm_source": "partnerstack",
        "utm_medium": "affiliate",
        "utm_campaign": "partner_program",
        "utm_content": partner,
    }
    return Landing(
        "affiliate", "/", query, f"https://www.{partner.replace('_', '')}.com/",
        Channel.AFFILIATE, "partnerstack", "affiliate", "partner_program", None, partner,
    )  # fmt: skip


def _display(rng: random.Random) -> Landing:
    if rng.random() < 0.5:
        query = {
            "utm_source": "criteo",
            "utm_medium": "display",
            "utm_campaign": "retargeting_display",
        }
        return Landing(
            "display", "/pricing", query, "https://www.theverge.com/",
            Channel.DISPLAY, "criteo", "display", "retargeting_display",
        )  # fmt: skip
    query = {
        "utm_source": "google",
        "utm_medium": "cpm",
        "utm_campaign": "awareness_banner",
        "gclid": "Cj0KCQ" + _token(rng),
    }
    return Landing(
        "display", "/", query, "https://www.techcrunch.com/",
        Channel.DISPLAY, "google", "cpm", "awareness_banner",
    )  # fmt: skip


_Builder = Callable[[random.Random], Landing]

# Where first visits come from, and where returning visitors come from (weights).
ACQUISITION_MIX: tuple[tuple[_Builder, int], ...] = (
    (_google_ads, 18),
    (_bing_ads, 3),
    (_organic_search, 22),
    (_linkedin_ads, 8),
    (_facebook_ads, 4),
    (_organic_social, 8),
    (_newsletter, 3),
    (_referral, 9),
    (_direct, 14),
    (_affiliate, 5),
    (_display, 6),
)
RETURN_MIX: tuple[tuple[_Builder, int], ...] = (
    (_direct, 28),
    (_newsletter, 18),
    (_organic_search, 14),
    (_google_ads, 12),
    (_display, 8),
    (_facebook_ads, 4),
    (_linkedin_ads, 4),
    (_organic_social, 5),
    (_referral, 4),
    (_affiliate, 3),
)
# Chance that a session of this kind ends in a form fill (before the session-count boost).
_FORM_RATE = {
    "google_ads": 0.07,
    "bing_ads": 0.06,
    "organic_search": 0.04,
    "linkedin_ads": 0.06,
    "facebook_ads": 0.03,
    "organic_social": 0.03,
    "newsletter": 0.08,
    "referral": 0.09,
    "direct": 0.06,
    "affiliate": 0.06,
    "display": 0.02,
}

_OFFLINE_TOUCHES = (
    ("phone", "call", "inbound_sales_line"),
    ("sdr", "call", "outbound_sequence_q4"),
    ("sales", "meeting", "discovery_call"),
    ("event", "trade_show", "saastr_europa_2026"),
)

_DESKTOP_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
_MOBILE_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
)
BOT_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
)

_FIRST_NAMES = ("Anna", "Ben", "Chiara", "David", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas",
                "Kira", "Luca", "Maya", "Noah", "Olga", "Pavel", "Rosa", "Sami", "Tara", "Yusuf")  # fmt: skip
_LAST_NAMES = ("Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova",
               "Jensen", "Kowalski", "Laurent", "Moreau", "Novak", "Okafor", "Rossi", "Schmidt")  # fmt: skip
_COMPANIES = ("northwind.io", "contoso-labs.com", "globex.eu", "initech.dev", "umbrella-saas.com",
              "hooli.xyz", "piedpiper.net", "vandelay.io", "wayne-analytics.com", "stark-cloud.de")  # fmt: skip

# Funnel: chance to move on from each stage, days to the next stage (min, max),
# and the chance a deal that does not move on is closed lost (else it stays open).
_FUNNEL = (
    ("lead", 0.75, (1, 6), 0.3),
    ("mql", 0.65, (2, 8), 0.4),
    ("sql", 0.65, (3, 10), 0.5),
    ("opportunity", 0.75, (4, 12), 0.6),
    ("proposal", 0.7, (3, 10), 0.7),
    ("negotiation", 0.6, (3, 12), 0.9),
)
_DEAL_RATE = 0.6  # share of leads the CRM opens a deal for


def _weighted(rng: random.Random, options: Sequence[tuple[_T, int]]) -> _T:
    total = sum(w for _, w in options)
    pick = rng.uniform(0, total)
    for value, weight in options:
        pick -= weight
        if pick <= 0:
            return value
    return options[-1][0]


def _seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


# --------------------------------------------------------------------------- generation


@dataclass
class _Device:
    """One browser of a person: its user agent and current cookie (anonymous ID)."""

    user_agent: str
    anonymous_id: str
    identified: bool = False


class _Generator:
    """Builds one visitor's traffic; collects beacons, stage changes and truth in shared lists."""

    def __init__(self, config: SimulationConfig, out: _Output, index: int) -> None:
        self.config = config
        self.out = out
        self.index = index
        self.rng = random.Random(f"closedloop-demo:{config.seed}:{index}")
        self.counter = 0
        self.anonymous_ids: list[str] = []
        self.latest = config.end - timedelta(minutes=30)

    # -- helpers

    def event_id(self) -> str:
        self.counter += 1
        return f"demo-{self.config.seed}-{self.index}-{self.counter}"

    def new_anonymous_id(self, prefix: str = "") -> str:
        anonymous_id = prefix + str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.anonymous_ids.append(anonymous_id)
        return anonymous_id

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        base = self.config.site_url + path
        return f"{base}?{urlencode(dict(query))}" if query else base

    def beacon(self, at: datetime, agent: str, event: dict[str, Any], *, bot: bool) -> None:
        event["timestamp"] = _iso(at)
        self.out.beacons.append(Beacon(at, agent, event, bot))

    # -- sessions

    def session(
        self,
        device: _Device,
        start: datetime,
        landing: Landing,
        *,
        bot: bool = False,
        form_email: str | None = None,
        identify_email: str | None = None,
    ) -> datetime:
        """Play one session; returns the time of its last event."""
        rng = self.rng
        first_event = self.event_id()
        session_id = _token(rng, 12)
        event: dict[str, Any] = {
            "type": "pageview",
            "anonymous_id": device.anonymous_id,
            "event_id": first_event,
            "session_id": session_id,
            "url": self.url(landing.path, landing.query),
            "title": _title(landing.path),
        }
        if landing.referrer is not None:
            event["referrer"] = landing.referrer
        event.update(landing.explicit_tags)
        self.beacon(start, device.user_agent, event, bot=bot)
        if not bot:
            self.out.touchpoints.append(
                TruthTouchpoint(
                    touchpoint_id=touchpoint_id(device.anonymous_id, first_event),
                    anonymous_id=device.anonymous_id,
                    first_event_id=first_event,
                    occurred_at=start,
                    channel=landing.channel.name,
                    source=landing.source,
                    medium=landing.medium,
                    campaign=landing.campaign,
                    term=landing.term,
                    content=landing.content,
                    landing_page=self.config.site_url + landing.path,
                    is_offline=False,
                    person=self.index,
                    kind=landing.kind,
                )
            )
        at, page = start, landing.path
        pages = rng.choice((0, 0, 1, 1, 2, 3)) if not bot else rng.randint(2, 12)
        for _ in range(pages):
            at += timedelta(seconds=rng.randint(15, 240))
            following = rng.choice(_INNER_PAGES)
            self.beacon(
                at,
                device.user_agent,
                {
                    "type": "pageview",
                    "anonymous_id": device.anonymous_id,
                    "event_id": self.event_id(),
                    "session_id": session_id,
                    "url": self.url(following),
                    "title": _title(following),
                    "referrer": self.url(page),
                },
                bot=bot,
            )
            page = following
        if form_email is not None:
            form_page = landing.path if landing.path in _FORMS else rng.choice(tuple(_FORMS))
            at += timedelta(seconds=rng.randint(20, 300))
            form_id = self.event_id()
            self.beacon(
                at,
                device.user_agent,
                {
                    "type": "form_submit",
                    "anonymous_id": device.anonymous_id,
                    "event_id": form_id,
                    "session_id": session_id,
                    "event_name": _FORMS[form_page],
                    "email": form_email,
                    "url": self.url(form_page),
                    "referrer": self.url(page),
                    "traits": {"company": form_email.rsplit("@", 1)[1]},
                },
                bot=bot,
            )
            if not bot:
                self.identified(device, form_id, form_email, at)
            identify_email = identify_email or form_email
        if identify_email is not None:
            at += _SECOND
            identify_id = self.event_id()
            self.beacon(
                at,
                device.user_agent,
                {
                    "type": "identify",
                    "anonymous_id": device.anonymous_id,
                    "event_id": identify_id,
                    "email": identify_email,
                },
                bot=bot,
            )
            if not bot:
                self.identified(device, identify_id, identify_email, at)
        return at

    def identified(self, device: _Device, event_id: str, email: str, at: datetime) -> None:
        device.identified = True
        self.out.identifications.append(
            TruthIdentification(event_id, device.anonymous_id, email, at, self.index)
        )

    def offline_touch(self, at: datetime, email: str) -> None:
        """A call or meeting logged server-side: an offline touch plus the identify that ties it."""
        source, medium, campaign = self.rng.choice(_OFFLINE_TOUCHES)
        anonymous_id = self.new_anonymous_id("crm-activity-")
        touch_id = self.event_id()
        agent = "closedloop-demo-crm-sync/1.0"
        self.beacon(
            at,
            agent,
            {
                "type": "offline_touch",
                "anonymous_id": anonymous_id,
                "event_id": touch_id,
                "utm_source": source,
                "utm_medium": medium,
                "utm_campaign": campaign,
                "properties": {"duration_seconds": str(self.rng.randint(60, 2400))},
            },
            bot=False,
        )
        identify_id = self.event_id()
        self.beacon(
            at,
            agent,
            {
                "type": "identify",
                "anonymous_id": anonymous_id,
                "event_id": identify_id,
                "email": email,
            },
            bot=False,
        )
        self.out.touchpoints.append(
            TruthTouchpoint(
                touchpoint_id=touchpoint_id(anonymous_id, touch_id),
                anonymous_id=anonymous_id,
                first_event_id=touch_id,
                occurred_at=at,
                channel=Channel.OFFLINE.name,
                source=source,
                medium=medium,
                campaign=campaign,
                term=None,
                content=None,
                landing_page=None,
                is_offline=True,
                person=self.index,
                kind="offline",
            )
        )
        self.out.identifications.append(
            TruthIdentification(identify_id, anonymous_id, email, at, self.index)
        )

    # -- visitors

    def start_time(self) -> datetime:
        span = (self.latest - self.config.start).total_seconds() - 86_400
        return _seconds(self.config.start + timedelta(seconds=self.rng.uniform(0, span)))

    def gap(self, after: datetime) -> datetime:
        days = self.rng.expovariate(1 / 3.5)
        return _seconds(after + max(_MIN_SESSION_GAP, timedelta(days=days)))

    def bot(self) -> None:
        rng = self.rng
        agent = rng.choice(BOT_AGENTS)
        at = self.start_time()
        for _ in range(rng.randint(1, 4)):
            device = _Device(agent, self.new_anonymous_id())  # crawlers rarely keep cookies
            landing = _weighted(rng, ACQUISITION_MIX)(rng)
            spam = f"seo-offer-{self.index}-{rng.randint(1, 999)}@spam-outreach.biz"
            at = self.session(
                device, at, landing, bot=True, form_email=spam if rng.random() < 0.3 else None
            )
            at = self.gap(at)
            if at > self.latest:
                break
        self.out.people.append(TruthPerson(self.index, None, tuple(self.anonymous_ids), True))

    def human(self) -> None:
        rng = self.rng
        email, form_email, crm_email = _emails(rng, self.index)
        desktop = _Device(rng.choice(_DESKTOP_AGENTS), self.new_anonymous_id())
        mobile = (
            _Device(rng.choice(_MOBILE_AGENTS), self.new_anonymous_id())
            if rng.random() < self.config.cross_device_share
            else None
        )
        if mobile is not None:
            self.anonymous_ids.remove(mobile.anonymous_id)  # listed when first used
            self.anonymous_ids.append(mobile.anonymous_id)
        patience = 1 + min(int(rng.expovariate(0.55)), 9)  # sessions before giving up
        after_lead = rng.randint(0, 5)  # sessions after becoming a lead
        lead_at: datetime | None = None
        at = self.start_time()
        session_number = 0
        while at <= self.latest:
            device = mobile if mobile is not None and rng.random() < 0.4 else desktop
            mix = ACQUISITION_MIX if session_number == 0 else RETURN_MIX
            landing = _weighted(rng, mix)(rng)
            converts = lead_at is None and rng.random() < _FORM_RATE[landing.kind] * (
                1 + 0.6 * session_number
            )
            phone_lead = converts and rng.random() < 0.1
            login = (
                lead_at is not None and not device.identified and rng.random() < 0.5
            )  # e.g. signs in to the trial, or a webinar reminder link with identify
            end = self.session(
                device,
                at,
                landing,
                form_email=form_email if converts and not phone_lead else None,
                identify_email=email if login else None,
            )
            if converts:
                if phone_lead:
                    # Calls the sales line instead of filling the form: the browser stays anonymous.
                    end = _seconds(end + timedelta(minutes=rng.randint(5, 90)))
                    if end > self.latest:
                        break
                    self.offline_touch(end, email)
                lead_at = end
                self.deal(email, crm_email, lead_at)
            session_number += 1
            if lead_at is None and session_number >= patience:
                break
            if lead_at is not None:
                if after_lead == 0:
                    break
                after_lead -= 1
            at = self.gap(end)
            for dev in (desktop, mobile):
                if dev is not None and rng.random() < self.config.cookie_loss_rate:
                    dev.anonymous_id = self.new_anonymous_id()  # cookies cleared or expired
                    dev.identified = False
        self.out.people.append(
            TruthPerson(
                self.index, email if lead_at else None, tuple(self.anonymous_ids), is_bot=False
            )
        )

    def crm_only(self) -> None:
        """A deal for a contact the website never saw (outbound prospecting, a partner intro)."""
        email, _form, crm_email = _emails(self.rng, self.index)
        self.deal(email, crm_email, self.start_time(), always=True)
        self.out.people.append(TruthPerson(self.index, email, (), is_bot=False))

    # -- deals

    def deal(self, email: str, crm_email: str, lead_at: datetime, *, always: bool = False) -> None:
        rng = self.rng
        if not always and rng.random() >= _DEAL_RATE:
            return
        crm = rng.choice(self.config.crms)
        deal_id = f"{crm[:2].upper()}-{self.config.seed}-{self.index}"
        deal_name = f"{crm_email.rsplit('@', 1)[1].split('.')[0].title()} - Acme Analytics"
        currency = "EUR"
        at = _seconds(lead_at + timedelta(minutes=rng.randint(30, 2880)))
        amount: Decimal | None = None
        stages: list[TruthStage] = []
        for stage, advance, (low, high), lost_rate in (*_FUNNEL, ("closed_won", 0, (0, 0), 0)):
            if at > self.latest:
                break
            if stage == "opportunity":
                amount = _amount(rng)
            elif stage in ("proposal", "negotiation") and amount is not None:
                amount = _round_amount(amount * Decimal(str(rng.uniform(0.85, 1.1))))
            stages.append(
                self.stage_change(crm, deal_id, deal_name, crm_email, stage, at, amount, currency)
            )
            if stage in ("sql", "opportunity", "proposal") and rng.random() < 0.5:
                call_at = _seconds(at + timedelta(hours=rng.uniform(2, 48)))
                if call_at <= self.latest:
                    self.offline_touch(call_at, email)
            if stage == "closed_won":
                break
            moves_on = rng.random() < advance
            at = _seconds(at + timedelta(days=rng.uniform(low, high)))
            if not moves_on:
                if rng.random() < lost_rate and at <= self.latest:
                    stages.append(
                        self.stage_change(
                            crm, deal_id, deal_name, crm_email, "closed_lost", at, amount, currency
                        )
                    )
                break
        if stages:
            self.out.deals.append(
                TruthDeal(deal_id, self.index, crm_email, crm, "default", currency, tuple(stages))
            )

    def stage_change(
        self,
        crm: str,
        deal_id: str,
        deal_name: str,
        email: str,
        stage: str,
        at: datetime,
        amount: Decimal | None,
        currency: str,
    ) -> TruthStage:
        event_id = f"demo-{self.config.seed}-{deal_id}-{stage}"
        self.out.stage_changes.append(
            StageChange(at, event_id, crm, deal_id, deal_name, email, "default", stage, amount, currency)
        )  # fmt: skip
        return TruthStage(event_id, stage, at, amount)


def _title(path: str) -> str:
    name = path.strip("/").split("/")[-1].replace("-", " ").title() or "Home"
    return f"{name} | Acme Analytics"


def _emails(rng: random.Random, index: int) -> tuple[str, str, str]:
    """(canonical, as typed into the form, as held by the CRM): the same mailbox three ways."""
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    if rng.random() < 0.2:
        # Gmail ignores dots and +tags: the form and the CRM spell it differently.
        canonical = f"{first}.{last}{index}@gmail.com".lower()
        return (
            canonical,
            f"{first}{last}{index}+demo@gmail.com".lower(),
            f"{first}.{last}{index}@GMail.com",
        )
    canonical = f"{first}.{last}.{index}@{rng.choice(_COMPANIES)}".lower()
    typed = canonical if rng.random() < 0.7 else canonical.title()
    return canonical, typed, canonical


def _round_amount(amount: Decimal) -> Decimal:
    return (amount / 100).quantize(Decimal(1)) * 100 + Decimal("0.00")


def _amount(rng: random.Random) -> Decimal:
    """A B2B annual contract value: log-normal around 12k EUR, between 2k and 150k."""
    value = math.exp(rng.gauss(math.log(12_000), 0.7))
    return _round_amount(Decimal(str(min(max(value, 2_000), 150_000))))


@dataclass
class _Output:
    beacons: list[Beacon] = field(default_factory=list)
    stage_changes: list[StageChange] = field(default_factory=list)
    touchpoints: list[TruthTouchpoint] = field(default_factory=list)
    identifications: list[TruthIdentification] = field(default_factory=list)
    deals: list[TruthDeal] = field(default_factory=list)
    people: list[TruthPerson] = field(default_factory=list)


def simulate(config: SimulationConfig) -> Simulation:
    """The traffic and ground truth of ``config``: the same config always gives the same result.

    Each visitor draws from its own random stream (seed and index), so visitor ``i``
    is the same whatever the size of the simulation.
    """
    out = _Output()
    crm_only_every = round(1 / config.crm_only_deal_share) if config.crm_only_deal_share else 0
    for index in range(config.visitors):
        generator = _Generator(config, out, index)
        if crm_only_every and index % crm_only_every == crm_only_every - 1:
            generator.crm_only()
        elif generator.rng.random() < config.bot_share:
            generator.bot()
        else:
            generator.human()
    beacons = sorted(out.beacons, key=lambda b: (b.at, str(b.event["event_id"])))
    changes = sorted(out.stage_changes, key=lambda c: (c.at, c.event_id))
    truth = GroundTruth(
        seed=config.seed,
        visitors=config.visitors,
        start=config.start,
        end=config.end,
        people=tuple(out.people),
        touchpoints=tuple(sorted(out.touchpoints, key=lambda t: (t.occurred_at, t.touchpoint_id))),
        identifications=tuple(
            sorted(out.identifications, key=lambda i: (i.occurred_at, i.event_id))
        ),
        deals=tuple(out.deals),
        beacons=len(beacons),
        bot_beacons=sum(1 for b in beacons if b.bot),
    )
    return Simulation(config, tuple(beacons), tuple(changes), truth)


def stage_order(stage: str) -> int:
    """The funnel position of a canonical stage."""
    return CANONICAL_STAGE_ORDER[stage]


def summarize(simulation: Simulation) -> dict[str, int]:
    """Counts a person reads before playing: visitors, bots, beacons, leads, deals, won deals."""
    truth = simulation.truth
    return {
        "visitors": truth.visitors,
        "bots": sum(1 for p in truth.people if p.is_bot),
        "beacons": truth.beacons,
        "bot_beacons": truth.bot_beacons,
        "touchpoints": len(truth.touchpoints),
        "identified_people": len({i.person for i in truth.identifications}),
        "deals": len(truth.deals),
        "stage_changes": len(simulation.stage_changes),
        "won_deals": sum(1 for d in truth.deals if d.stages[-1].stage == "closed_won"),
    }


def iter_slices(
    simulation: Simulation, width: timedelta = timedelta(days=1)
) -> Iterable[tuple[list[Beacon], list[StageChange]]]:
    """The traffic in slices of simulated time: each slice's beacons, then its stage changes."""
    beacons, changes = simulation.beacons, simulation.stage_changes
    b = c = 0
    cursor = simulation.config.start
    while b < len(beacons) or c < len(changes):
        cursor += width
        slice_beacons: list[Beacon] = []
        slice_changes: list[StageChange] = []
        while b < len(beacons) and beacons[b].at < cursor:
            slice_beacons.append(beacons[b])
            b += 1
        while c < len(changes) and changes[c].at < cursor:
            slice_changes.append(changes[c])
            c += 1
        if slice_beacons or slice_changes:
            yield slice_beacons, slice_changes
