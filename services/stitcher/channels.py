"""Channel classification: UTM tags, click IDs, referrer and landing URL to a channel.

Pure: the only I/O is reading the packaged lists in ``services/stitcher/data`` once,
at import. The rules follow GA4's default channel group folded into the 11
channels of DESIGN.md; services/stitcher/README.md ("Channel rules") documents them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from schemas.channels import Channel

__all__ = [
    "AD_ONLY_CLICK_IDS",
    "CLICK_ID_KEYS",
    "ChannelRules",
    "ClickIds",
    "Classification",
    "TrafficSource",
    "classify",
    "is_internal_referrer",
    "referrer_host",
]

# Every click ID we keep, in priority order when a URL carries more than one.
CLICK_ID_KEYS: tuple[str, ...] = (
    "gclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "li_fat_id",
    "ttclid",
    "fbclid",
)
# Appended only to ad clicks by the network's auto-tagging, so they mark paid traffic
# on their own. fbclid is missing on purpose: Meta appends it to organic outbound
# links from Facebook/Instagram too.
AD_ONLY_CLICK_IDS: frozenset[str] = frozenset(CLICK_ID_KEYS) - {"fbclid"}

DIRECT_SOURCE = "(direct)"
NONE_MEDIUM = "(none)"
_NOT_SET = frozenset({"(none)", "(not set)", "(not provided)", "none", "null", "undefined"})

# GA4 regexes and value sets (support.google.com/analytics/answer/9756891), case-insensitive.
_PAID_MEDIUM = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_DISPLAY_MEDIUMS = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUMS = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media"}
)
# GA4's email set plus "newsletter", the most common real-world spelling GA4 leaves Unassigned.
_EMAIL_VALUES = frozenset({"email", "e-mail", "e_mail", "e mail", "newsletter"})
_AFFILIATE_MEDIUMS = frozenset({"affiliate", "affiliates"})
_REFERRAL_MEDIUMS = frozenset({"referral", "app", "link"})
_ORGANIC_MEDIUMS = frozenset({"organic"})
_VIDEO_MEDIUMS = frozenset({"video", "paid_video", "paid-video"})

_WILDCARD_SUFFIX_LABEL = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class _Network:
    """One entry of a maintained list."""

    name: str
    domains: tuple[str, ...]
    wildcards: tuple[str, ...]  # "google" for "google.*"
    exclude: frozenset[str]
    aliases: frozenset[str]
    video: bool = False


def _suffixes(host: str) -> list[str]:
    """The host and every parent domain: a.b.example.com, b.example.com, example.com, com."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def _in_domains(host: str, domains: frozenset[str]) -> bool:
    """Whether the host is one of the domains or a subdomain of one."""
    return any(suffix in domains for suffix in _suffixes(host))


def _wildcard_match(labels: list[str], i: int) -> bool:
    # "google.*" matches google.com, www.google.co.uk, google.de: the label followed
    # by one or two short country/generic suffix labels.
    rest = labels[i + 1 :]
    return 1 <= len(rest) <= 2 and all(_WILDCARD_SUFFIX_LABEL.match(r) for r in rest)


@dataclass(frozen=True)
class _NetworkList:
    entries: tuple[_Network, ...]
    # Indexes built once: a lookup walks the host's parent domains instead of every entry.
    _by_domain: Mapping[str, _Network] = field(default_factory=dict, repr=False)
    _by_wildcard: Mapping[str, _Network] = field(default_factory=dict, repr=False)
    _by_alias: Mapping[str, _Network] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, entries: Iterable[_Network]) -> _NetworkList:
        items = tuple(entries)
        by_domain: dict[str, _Network] = {}
        by_wildcard: dict[str, _Network] = {}
        by_alias: dict[str, _Network] = {}
        for entry in items:  # the first entry naming a domain or alias wins
            for domain in entry.domains:
                by_domain.setdefault(domain, entry)
            for label in entry.wildcards:
                by_wildcard.setdefault(label, entry)
            for alias in (entry.name, *sorted(entry.aliases)):
                by_alias.setdefault(alias, entry)
        return cls(items, by_domain, by_wildcard, by_alias)

    def by_host(self, host: str | None) -> _Network | None:
        """The entry whose domain is the host or its nearest parent; excluded hosts match none."""
        if not host:
            return None
        suffixes = _suffixes(host)
        for suffix in suffixes:  # most specific first
            entry = self._by_domain.get(suffix)
            if entry is not None and not any(s in entry.exclude for s in suffixes):
                return entry
        labels = host.split(".")
        for i, label in enumerate(labels):
            entry = self._by_wildcard.get(label)
            excluded = entry is not None and any(s in entry.exclude for s in suffixes)
            if entry is not None and not excluded and _wildcard_match(labels, i):
                return entry
        return None

    def by_source(self, source: str | None) -> _Network | None:
        """The entry a utm_source names: its name, an alias, or one of its hosts."""
        if not source:
            return None
        entry = self._by_alias.get(source)
        if entry is not None:
            return entry
        if "." in source:
            return self.by_host(_strip_www(source))
        return None


def _load_json(name: str) -> Any:
    return json.loads(
        resources.files("services.stitcher.data").joinpath(name).read_text(encoding="utf-8")
    )


def _load_list(name: str) -> _NetworkList:
    entries = []
    for raw in _load_json(name)["entries"]:
        domains = [d.lower() for d in raw.get("domains", [])]
        entries.append(
            _Network(
                name=raw["name"].lower(),
                domains=tuple(d for d in domains if not d.endswith(".*")),
                wildcards=tuple(d[:-2] for d in domains if d.endswith(".*")),
                exclude=frozenset(d.lower() for d in raw.get("exclude", [])),
                aliases=frozenset(a.lower() for a in raw.get("aliases", [])),
                video=bool(raw.get("video", False)),
            )
        )
    return _NetworkList.of(entries)


SEARCH_ENGINES = _load_list("search_engines.json")
SOCIAL_NETWORKS = _load_list("social_networks.json")
EMAIL_PROVIDERS = _load_list("email_providers.json")
AFFILIATE_NETWORKS = _load_list("affiliate_networks.json")
DISPLAY_NETWORKS = _load_list("display_networks.json")
DEFAULT_IGNORED_REFERRERS: frozenset[str] = frozenset(
    d.lower() for d in _load_json("ignored_referrers.json")["domains"]
)

# Which network an ad-only click ID belongs to, and the channel of its ads.
_CLICK_ID_NETWORK: Mapping[str, tuple[str, Channel]] = MappingProxyType(
    {
        "gclid": ("google", Channel.PAID_SEARCH),
        "gbraid": ("google", Channel.PAID_SEARCH),
        "wbraid": ("google", Channel.PAID_SEARCH),
        "msclkid": ("bing", Channel.PAID_SEARCH),
        "li_fat_id": ("linkedin", Channel.PAID_SOCIAL),
        "ttclid": ("tiktok", Channel.PAID_SOCIAL),
    }
)
_META_SOURCES = frozenset({"facebook", "instagram", "threads"})
# Tagged channels an ad-only click ID overrides: tags that deny a paid click. Email,
# Affiliate and the paid channels stand (an ad URL pasted into a newsletter is Email).
_UNPAID_TAGGED = frozenset(
    {Channel.ORGANIC_SEARCH, Channel.ORGANIC_SOCIAL, Channel.REFERRAL, Channel.OTHER}
)


class ClickIds(dict[str, str]):
    """Read-only, hashable click IDs; a real dict, so Avro maps and JSON take it as is."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type[ClickIds], tuple[dict[str, str]]]:
        # pickle/copy would otherwise refill the dict through the blocked __setitem__
        return (type(self), (dict(self),))

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("click IDs are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only


@dataclass(frozen=True)
class TrafficSource:
    """What the collector saw when a hit arrived: landing URL, referrer, UTM tags, click IDs."""

    landing_url: str | None
    referrer: str | None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    # gclid, gbraid, wbraid, fbclid, msclkid, li_fat_id, ttclid (any case; others are dropped)
    click_ids: Mapping[str, str] = field(default_factory=dict)
    is_offline: bool = False


@dataclass(frozen=True)
class Classification:
    """The channel of a hit and the normalized source, medium, campaign and the rest."""

    channel: Channel
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    content: str | None
    referrer_host: str | None  # external referrer host only
    landing_page: str | None  # landing URL without query string and fragment
    click_ids: Mapping[str, str]
    internal: bool = False  # an own-domain or ignored (payment gateway) referrer

    def campaign_key(self) -> tuple[str | None, ...]:
        """What identifies "the campaign" for session breaks; () for Direct and internal hits.

        A hit with an empty key never breaks a session; two hits with different
        non-empty keys are different campaigns (UTM set, click ID or external referrer).
        """
        if self.channel is Channel.DIRECT or self.internal:
            return ()
        click = tuple(f"{k}={v}" for k, v in sorted(self.click_ids.items()))
        return (
            self.channel.name,
            self.source,
            self.medium,
            self.campaign,
            self.term,
            self.content,
            self.referrer_host,
            *click,
        )


@dataclass(frozen=True)
class ChannelRules:
    """Per-site rules: the site's own domains and the referrers to ignore."""

    # The site's own domains (and their subdomains): internal, never referrals.
    own_domains: frozenset[str] = frozenset()
    # Payment gateways and sign-in providers (and subdomains): treated like internal hits.
    ignored_referrers: frozenset[str] = DEFAULT_IGNORED_REFERRERS

    def __post_init__(self) -> None:
        # Normalize once so configuration may use any case, "www." or a trailing dot.
        object.__setattr__(
            self, "own_domains", frozenset(_normalize_domain(d) for d in self.own_domains) - {""}
        )
        object.__setattr__(
            self,
            "ignored_referrers",
            frozenset(_normalize_domain(d) for d in self.ignored_referrers) - {""},
        )

    @classmethod
    def default(cls, own_domains: Iterable[str] = ()) -> ChannelRules:
        """Rules with the given own domains and the packaged ignored referrers."""
        return cls(own_domains=frozenset(own_domains), ignored_referrers=DEFAULT_IGNORED_REFERRERS)


def _normalize_domain(domain: str) -> str:
    return _strip_www(domain.strip().lower().rstrip("."))


def _strip_www(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def _clean(value: object) -> str | None:
    """Strip whitespace; empty becomes None. Non-strings (bad input) become None."""
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


def _clean_lower(value: object) -> str | None:
    cleaned = _clean(value)
    return cleaned.lower() if cleaned else None


def _split(url: str | None) -> tuple[str, str, str, str, str] | None:
    """urlsplit that never raises and accepts URLs without a scheme ("www.google.com/x")."""
    cleaned = _clean(url)
    if cleaned is None:
        return None
    if "://" not in cleaned and not cleaned.startswith("//"):
        cleaned = "//" + cleaned
    try:
        parts = urlsplit(cleaned)
        host = parts.hostname  # validates the port-free host; may raise on bad IPv6
    except ValueError:
        return None
    return (parts.scheme.lower(), host or "", parts.path, parts.query, parts.netloc)


def referrer_host(url: str | None) -> str | None:
    """The lower-case host of a URL without "www." and trailing dot; android-app:// gives the package."""
    parts = _split(url)
    if parts is None or not parts[1]:
        return None
    return _strip_www(parts[1].rstrip(".")) or None


def _landing_page(url: str | None) -> str | None:
    cleaned = _clean(url)
    if cleaned is None:
        return None
    try:
        parts = urlsplit(cleaned)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) or None
    except ValueError:
        return cleaned.split("#", 1)[0].split("?", 1)[0] or None


def _query(url: str | None) -> dict[str, str]:
    """The landing URL's query parameters, keys lower-cased, first value wins."""
    parts = _split(url)
    if parts is None:
        return {}
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts[3], keep_blank_values=False):
        params.setdefault(key.strip().lower(), value)
    return params


def is_internal_referrer(
    referrer: str | None, landing_url: str | None, rules: ChannelRules
) -> bool:
    """True for a referrer on the site itself: an own domain or subdomain, or the landing host.

    Ignored referrers (payment gateways) are not internal by this test; classify()
    treats both alike.
    """
    host = referrer_host(referrer)
    if host is None:
        return False
    if _in_domains(host, rules.own_domains):
        return True
    landing_host = referrer_host(landing_url)
    return landing_host is not None and host == landing_host


def _click_ids(source: TrafficSource, query: Mapping[str, str]) -> dict[str, str]:
    given: dict[str, str] = {}
    raw = source.click_ids if isinstance(source.click_ids, Mapping) else {}
    for key, value in raw.items():
        k = _clean_lower(key)
        v = _clean(value)
        if k in CLICK_ID_KEYS and v is not None:
            given[k] = v
    for key in CLICK_ID_KEYS:
        v = _clean(query.get(key))
        if key not in given and v is not None:
            given[key] = v
    return {k: given[k] for k in CLICK_ID_KEYS if k in given}


def _channel_from_tags(source: str | None, medium: str | None) -> Channel:
    """GA4's default channel group over (source, medium), folded into our 11 channels."""
    if source in (DIRECT_SOURCE, "direct") and medium in (None, NONE_MEDIUM, "(not set)"):
        return Channel.DIRECT
    search = SEARCH_ENGINES.by_source(source)
    social = SOCIAL_NETWORKS.by_source(source)
    if medium is not None and medium in _DISPLAY_MEDIUMS:
        return Channel.DISPLAY
    if medium is not None and (_PAID_MEDIUM.match(medium) or medium in _VIDEO_MEDIUMS):
        if social is not None and social.video:
            return Channel.DISPLAY  # GA4 "Paid Video"
        if search is not None:
            return Channel.PAID_SEARCH
        if social is not None:
            return Channel.PAID_SOCIAL
        if AFFILIATE_NETWORKS.by_source(source) is not None:
            return Channel.AFFILIATE
        if DISPLAY_NETWORKS.by_source(source) is not None or medium in _VIDEO_MEDIUMS:
            return Channel.DISPLAY
        if medium in ("paidsearch", "paid_search", "paid-search", "ppc", "cpc", "sem"):
            return Channel.PAID_SEARCH  # an explicitly paid-search medium from an unlisted engine
        if medium in ("paidsocial", "paid_social", "paid-social", "paid social"):
            return Channel.PAID_SOCIAL
        return Channel.OTHER  # GA4 "Paid Other"
    if medium in _ORGANIC_MEDIUMS or (search is not None and medium is None):
        return Channel.ORGANIC_SEARCH
    if medium in _SOCIAL_MEDIUMS or (social is not None and medium is None):
        return Channel.ORGANIC_SOCIAL
    if medium in _EMAIL_VALUES or source in _EMAIL_VALUES:
        return Channel.EMAIL
    if medium in _AFFILIATE_MEDIUMS:
        return Channel.AFFILIATE
    if medium in _REFERRAL_MEDIUMS:
        return Channel.REFERRAL
    # The lists decide when the medium says nothing GA4 knows.
    if search is not None:
        return Channel.ORGANIC_SEARCH
    if social is not None:
        return Channel.ORGANIC_SOCIAL
    if EMAIL_PROVIDERS.by_source(source) is not None:
        return Channel.EMAIL
    if AFFILIATE_NETWORKS.by_source(source) is not None:
        return Channel.AFFILIATE
    if DISPLAY_NETWORKS.by_source(source) is not None:
        return Channel.DISPLAY
    return Channel.OTHER  # GA4 "Unassigned"


def _from_click_id(
    click_ids: Mapping[str, str], ref_host: str | None
) -> tuple[Channel, str, str] | None:
    """(channel, source, medium) from an ad-only click ID when no UTM source/medium is given."""
    for key in CLICK_ID_KEYS:
        if key not in click_ids or key not in AD_ONLY_CLICK_IDS:
            continue
        network, channel = _CLICK_ID_NETWORK[key]
        medium = "cpc"
        if channel is Channel.PAID_SEARCH and ref_host is not None:
            search = SEARCH_ENGINES.by_host(ref_host)
            if search is None:
                # A Google/Microsoft ad click from a non-search page: YouTube, a
                # Display/Audience Network publisher or a Performance Max placement.
                return (Channel.DISPLAY, network, medium)
        return (channel, network, medium)
    return None


def _from_referrer(host: str) -> tuple[Channel, str, str]:
    """(channel, source, medium) of an external referrer with no tags and no ad click ID."""
    if (entry := EMAIL_PROVIDERS.by_host(host)) is not None:
        return (Channel.EMAIL, entry.name, "email")
    if (entry := SOCIAL_NETWORKS.by_host(host)) is not None:
        return (Channel.ORGANIC_SOCIAL, entry.name, "social")
    if (entry := SEARCH_ENGINES.by_host(host)) is not None:
        return (Channel.ORGANIC_SEARCH, entry.name, "organic")
    if (entry := AFFILIATE_NETWORKS.by_host(host)) is not None:
        return (Channel.AFFILIATE, entry.name, "affiliate")
    if (entry := DISPLAY_NETWORKS.by_host(host)) is not None:
        return (Channel.DISPLAY, entry.name, "display")
    return (Channel.REFERRAL, host, "referral")


def _direct(landing_page: str | None, *, internal: bool) -> Classification:
    return Classification(
        channel=Channel.DIRECT,
        source=DIRECT_SOURCE,
        medium=NONE_MEDIUM,
        campaign=None,
        term=None,
        content=None,
        referrer_host=None,
        landing_page=landing_page,
        click_ids=ClickIds(),
        internal=internal,
    )


def classify(source: TrafficSource, rules: ChannelRules) -> Classification:
    """The channel, source, medium, campaign, term, content of one hit; never raises."""
    landing_page = _landing_page(source.landing_url)
    query = _query(source.landing_url)

    def tag(value: str | None, name: str) -> str | None:
        # Explicit fields win; the landing URL's query fills what the collector did not split out.
        return _clean(value) or _clean(query.get(name))

    utm_source = (tag(source.utm_source, "utm_source") or "").lower() or None
    utm_medium = (tag(source.utm_medium, "utm_medium") or "").lower() or None
    if utm_medium in _NOT_SET:
        utm_medium = None
    if utm_source in _NOT_SET:
        utm_source = None
    campaign = tag(source.utm_campaign, "utm_campaign")
    term = tag(source.utm_term, "utm_term")
    content = tag(source.utm_content, "utm_content")

    if source.is_offline:
        return Classification(
            channel=Channel.OFFLINE,
            source=utm_source,
            medium=utm_medium or "offline",
            campaign=campaign,
            term=term,
            content=content,
            referrer_host=None,
            landing_page=landing_page,
            click_ids=ClickIds(_click_ids(source, query)),
        )

    ref_host = referrer_host(source.referrer)
    # Internal UTM misuse, self-referrals and returns from payment gateways: the tags
    # and click IDs of a hit that came from the site itself say nothing about how the
    # visitor arrived, so such a hit is internal and never starts a campaign.
    if ref_host is not None and (
        is_internal_referrer(source.referrer, source.landing_url, rules)
        or _in_domains(ref_host, rules.ignored_referrers)
    ):
        return _direct(landing_page, internal=True)

    click_ids = _click_ids(source, query)
    frozen_ids = ClickIds(click_ids)

    if utm_source is not None or utm_medium is not None:
        from_click = _from_click_id(click_ids, ref_host)
        if utm_medium is None and from_click is not None:
            # gclid plus a utm_source/campaign but no medium: auto-tagging says paid.
            channel, network, medium = from_click
            return Classification(
                channel,
                utm_source or network,
                medium,
                campaign,
                term,
                content,
                ref_host,
                landing_page,
                frozen_ids,
            )
        if utm_source is None and ref_host is not None:
            utm_source = _from_referrer(ref_host)[1]
        elif utm_source is None and from_click is not None:
            utm_source = from_click[1]
        elif utm_source is None and "fbclid" in click_ids:
            utm_source = "facebook"
        channel = _channel_from_tags(utm_source, utm_medium)
        if channel is Channel.DIRECT:
            return _direct(landing_page, internal=False)  # "(direct) / (none)" tagged links
        if from_click is not None and channel in _UNPAID_TAGGED:
            # An ad-only click ID proves an ad click even when the ad's manual tags say
            # "social" or "organic" (GA4: auto-tagging overrides manual tags); the
            # advertiser's source/medium are kept as given.
            channel = from_click[0]
        return Classification(
            channel,
            utm_source,
            utm_medium or "(not set)",
            campaign,
            term,
            content,
            ref_host,
            landing_page,
            frozen_ids,
        )

    from_click = _from_click_id(click_ids, ref_host)
    if from_click is not None:
        channel, network, medium = from_click
        return Classification(
            channel, network, medium, campaign, term, content, ref_host, landing_page, frozen_ids
        )

    if "fbclid" in click_ids:
        # fbclid alone: Meta adds it to organic outbound links too, so it proves only
        # that the click came from a Meta app; without a paid UTM medium it is organic.
        social = SOCIAL_NETWORKS.by_host(ref_host) if ref_host else None
        name = social.name if social is not None and social.name in _META_SOURCES else "facebook"
        return Classification(
            Channel.ORGANIC_SOCIAL,
            name,
            "social",
            campaign,
            term,
            content,
            ref_host,
            landing_page,
            frozen_ids,
        )

    if ref_host is None:
        if campaign is None and term is None and content is None:
            return _direct(landing_page, internal=False)
        # utm_campaign without source/medium and no referrer: GA4 leaves it Unassigned.
        return Classification(
            Channel.OTHER,
            "(not set)",
            "(not set)",
            campaign,
            term,
            content,
            None,
            landing_page,
            frozen_ids,
        )

    channel, ref_source, medium = _from_referrer(ref_host)
    return Classification(
        channel, ref_source, medium, campaign, term, content, ref_host, landing_page, frozen_ids
    )
