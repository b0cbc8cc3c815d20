"""Channel classification: table of real-world hits, normalization, campaign keys, never raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.channels import Channel
from services.stitcher.channels import (
    AD_ONLY_CLICK_IDS,
    CLICK_ID_KEYS,
    ChannelRules,
    Classification,
    TrafficSource,
    classify,
    is_internal_referrer,
    referrer_host,
)

pytestmark = pytest.mark.unit

RULES = ChannelRules.default(own_domains=["example.com", "example-shop.io"])
LP = "https://www.example.com/pricing"


@dataclass(frozen=True)
class Case:
    id: str
    landing: str | None
    referrer: str | None
    channel: Channel
    source: str | None
    medium: str | None
    utm: dict[str, str] = field(default_factory=dict)
    click_ids: dict[str, str] = field(default_factory=dict)


PS, OS, PSo, OSo = (
    Channel.PAID_SEARCH,
    Channel.ORGANIC_SEARCH,
    Channel.PAID_SOCIAL,
    Channel.ORGANIC_SOCIAL,
)
EM, REF, DIS, AFF, DIR, OTH = (
    Channel.EMAIL,
    Channel.REFERRAL,
    Channel.DISPLAY,
    Channel.AFFILIATE,
    Channel.DIRECT,
    Channel.OTHER,
)

CASES = [
    # --- Google Ads ---
    Case(
        "google ads auto-tagged",
        LP + "?gclid=Cj0KCQiA",
        "https://www.google.com/",
        PS,
        "google",
        "cpc",
    ),
    Case(
        "google ads gclid in click_ids field",
        LP,
        "https://www.google.de/",
        PS,
        "google",
        "cpc",
        click_ids={"gclid": "Cj0KCQiA"},
    ),
    Case("google ads gclid no referrer", LP + "?gclid=abc", None, PS, "google", "cpc"),
    Case("google ads gbraid (iOS app)", LP + "?gbraid=0AAAAA", None, PS, "google", "cpc"),
    Case(
        "google ads wbraid (iOS web)",
        LP + "?wbraid=CkEKCQ",
        "https://www.google.com/",
        PS,
        "google",
        "cpc",
    ),
    Case(
        "google ads gclid from youtube",
        LP + "?gclid=x",
        "https://www.youtube.com/",
        DIS,
        "google",
        "cpc",
    ),
    Case(
        "google ads gclid from gdn publisher",
        LP + "?gclid=x",
        "https://news-site.example.org/article",
        DIS,
        "google",
        "cpc",
    ),
    Case(
        "google ads manual tagging",
        LP + "?utm_source=google&utm_medium=cpc&utm_campaign=brand",
        None,
        PS,
        "google",
        "cpc",
    ),
    Case(
        "google ads manual + gclid",
        LP + "?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=x",
        "https://www.google.com/",
        PS,
        "google",
        "cpc",
    ),
    Case(
        "google ads gclid + utm_campaign only",
        LP + "?utm_campaign=brand&gclid=x",
        "https://www.google.com/",
        PS,
        "google",
        "cpc",
    ),
    Case(
        "google ads gclid + utm_source no medium",
        LP + "?utm_source=adwords&gclid=x",
        None,
        PS,
        "adwords",
        "cpc",
    ),
    Case(
        "google ads medium ppc", LP + "?utm_source=google&utm_medium=ppc", None, PS, "google", "ppc"
    ),
    Case(
        "google ads medium paidsearch",
        LP + "?utm_source=google&utm_medium=paidsearch",
        None,
        PS,
        "google",
        "paidsearch",
    ),
    Case(
        "google ads retargeting",
        LP + "?utm_source=google&utm_medium=retargeting",
        None,
        PS,
        "google",
        "retargeting",
    ),
    Case(
        "google display manual",
        LP + "?utm_source=google&utm_medium=display",
        None,
        DIS,
        "google",
        "display",
    ),
    Case(
        "youtube paid video",
        LP + "?utm_source=youtube&utm_medium=paid_video",
        None,
        DIS,
        "youtube",
        "paid_video",
    ),
    # --- Organic search ---
    Case("google organic", LP, "https://www.google.com/", OS, "google", "organic"),
    Case("google organic country tld", LP, "https://www.google.co.uk/", OS, "google", "organic"),
    Case(
        "google android search app",
        LP,
        "android-app://com.google.android.googlequicksearchbox/",
        OS,
        "google",
        "organic",
    ),
    Case("bing organic", LP, "https://www.bing.com/search?q=x", OS, "bing", "organic"),
    Case("duckduckgo organic", LP, "https://duckduckgo.com/", OS, "duckduckgo", "organic"),
    Case("yahoo search organic", LP, "https://search.yahoo.com/", OS, "yahoo", "organic"),
    Case("ecosia organic", LP, "https://www.ecosia.org/", OS, "ecosia", "organic"),
    Case("yandex organic", LP, "https://yandex.ru/", OS, "yandex", "organic"),
    Case(
        "utm medium organic",
        LP + "?utm_source=newsletter-partner&utm_medium=organic",
        None,
        OS,
        "newsletter-partner",
        "organic",
    ),
    Case(
        "google docs is a referral",
        LP,
        "https://docs.google.com/document/d/1",
        REF,
        "docs.google.com",
        "referral",
    ),
    # --- Bing / Microsoft ---
    Case("bing ads auto-tagged", LP + "?msclkid=7f3e", "https://www.bing.com/", PS, "bing", "cpc"),
    Case("bing ads msclkid no referrer", LP + "?msclkid=7f3e", None, PS, "bing", "cpc"),
    Case(
        "bing ads msclkid from audience network",
        LP + "?msclkid=7f3e",
        "https://www.msn.com/en-us/news",
        DIS,
        "bing",
        "cpc",
    ),
    Case(
        "bing ads manual",
        LP + "?utm_source=bing&utm_medium=cpc&utm_campaign=generic",
        None,
        PS,
        "bing",
        "cpc",
    ),
    # --- Facebook / Instagram ---
    Case(
        "facebook ads utm paid_social",
        LP + "?utm_source=facebook&utm_medium=paid_social&fbclid=IwAR",
        "https://l.facebook.com/",
        PSo,
        "facebook",
        "paid_social",
    ),
    Case(
        "facebook ads utm cpc",
        LP + "?utm_source=fb&utm_medium=cpc&utm_campaign=q4",
        "https://m.facebook.com/",
        PSo,
        "fb",
        "cpc",
    ),
    Case(
        "instagram ads utm paid",
        LP + "?utm_source=ig&utm_medium=paid&fbclid=PAZ",
        "https://l.instagram.com/",
        PSo,
        "ig",
        "paid",
    ),
    Case(
        "facebook organic fbclid only",
        LP + "?fbclid=IwAR0x",
        "https://l.facebook.com/",
        OSo,
        "facebook",
        "social",
    ),
    Case(
        "facebook organic fbclid no referrer",
        LP + "?fbclid=IwAR0x",
        None,
        OSo,
        "facebook",
        "social",
    ),
    Case(
        "instagram organic fbclid",
        LP + "?fbclid=PAZ",
        "https://l.instagram.com/",
        OSo,
        "instagram",
        "social",
    ),
    Case("facebook organic no fbclid", LP, "https://m.facebook.com/", OSo, "facebook", "social"),
    Case(
        "facebook android app", LP, "android-app://com.facebook.katana/", OSo, "facebook", "social"
    ),
    Case(
        "facebook utm social",
        LP + "?utm_source=facebook&utm_medium=social",
        "https://l.facebook.com/",
        OSo,
        "facebook",
        "social",
    ),
    # --- LinkedIn, X, Reddit, TikTok ---
    Case(
        "linkedin ads li_fat_id",
        LP + "?li_fat_id=abc-123",
        "https://www.linkedin.com/",
        PSo,
        "linkedin",
        "cpc",
    ),
    Case(
        "linkedin ads utm",
        LP + "?utm_source=linkedin&utm_medium=paid_social&utm_campaign=abm",
        None,
        PSo,
        "linkedin",
        "paid_social",
    ),
    Case(
        "linkedin ads mis-tagged social + li_fat_id",
        LP + "?utm_source=linkedin&utm_medium=social&li_fat_id=f",
        "https://www.linkedin.com/",
        PSo,
        "linkedin",
        "social",
    ),
    Case(
        "google ads mis-tagged organic + gclid",
        LP + "?utm_source=google&utm_medium=organic&gclid=x",
        "https://www.google.com/",
        PS,
        "google",
        "organic",
    ),
    Case(
        "ad url pasted into newsletter keeps email",
        LP + "?utm_source=newsletter&utm_medium=email&gclid=x",
        None,
        EM,
        "newsletter",
        "email",
    ),
    Case("linkedin organic", LP, "https://www.linkedin.com/feed/", OSo, "linkedin", "social"),
    Case("linkedin shortener lnkd.in", LP, "https://lnkd.in/e3xYz", OSo, "linkedin", "social"),
    Case(
        "linkedin android app", LP, "android-app://com.linkedin.android/", OSo, "linkedin", "social"
    ),
    Case("twitter t.co", LP, "https://t.co/AbC123", OSo, "twitter", "social"),
    Case("x.com organic", LP, "https://x.com/someone/status/1", OSo, "twitter", "social"),
    Case(
        "twitter ads utm",
        LP + "?utm_source=twitter&utm_medium=cpc",
        "https://t.co/x",
        PSo,
        "twitter",
        "cpc",
    ),
    Case(
        "reddit organic", LP, "https://www.reddit.com/r/dataengineering/", OSo, "reddit", "social"
    ),
    Case("reddit old/out", LP, "https://out.reddit.com/t3_abc", OSo, "reddit", "social"),
    Case("reddit ads utm", LP + "?utm_source=reddit&utm_medium=paid", None, PSo, "reddit", "paid"),
    Case("tiktok ads ttclid", LP + "?ttclid=E.C.P.abc", None, PSo, "tiktok", "cpc"),
    Case("hacker news", LP, "https://news.ycombinator.com/item?id=1", OSo, "hacker news", "social"),
    Case(
        "utm medium sm",
        LP + "?utm_source=partner-forum&utm_medium=sm",
        None,
        OSo,
        "partner-forum",
        "sm",
    ),
    # --- E-mail ---
    Case(
        "newsletter utm email",
        LP + "?utm_source=newsletter&utm_medium=email&utm_campaign=2026-11",
        None,
        EM,
        "newsletter",
        "email",
    ),
    Case(
        "newsletter utm e-mail",
        LP + "?utm_source=hubspot&utm_medium=e-mail",
        None,
        EM,
        "hubspot",
        "e-mail",
    ),
    Case(
        "newsletter medium newsletter",
        LP + "?utm_source=weekly&utm_medium=newsletter",
        None,
        EM,
        "weekly",
        "newsletter",
    ),
    Case(
        "mailchimp source only",
        LP + "?utm_source=mailchimp&utm_campaign=launch",
        None,
        EM,
        "mailchimp",
        "(not set)",
    ),
    Case("email source only", LP + "?utm_source=email", None, EM, "email", "(not set)"),
    Case("gmail web referrer", LP, "https://mail.google.com/", EM, "gmail", "email"),
    Case("gmail android app", LP, "android-app://com.google.android.gm/", EM, "gmail", "email"),
    Case("outlook web referrer", LP, "https://outlook.live.com/", EM, "outlook", "email"),
    Case(
        "outlook office 365 referrer",
        LP,
        "https://outlook.office.com/mail/inbox",
        EM,
        "outlook",
        "email",
    ),
    Case(
        "yahoo mail referrer", LP, "https://mail.yahoo.com/d/folders/1", EM, "yahoo mail", "email"
    ),
    Case(
        "hubspot hs_email",
        LP + "?utm_source=hs_email&utm_medium=email",
        None,
        EM,
        "hs_email",
        "email",
    ),
    # --- Affiliates ---
    Case(
        "affiliate utm",
        LP + "?utm_source=partner123&utm_medium=affiliate",
        "https://blog.partner.example/",
        AFF,
        "partner123",
        "affiliate",
    ),
    Case(
        "affiliates utm plural",
        LP + "?utm_source=x&utm_medium=affiliates",
        None,
        AFF,
        "x",
        "affiliates",
    ),
    Case("awin redirect referrer", LP, "https://www.awin1.com/cread.php", AFF, "awin", "affiliate"),
    Case("cj redirect referrer", LP, "https://www.anrdoezrs.net/click-1-2", AFF, "cj", "affiliate"),
    Case(
        "impact redirect referrer", LP, "https://partner.sjv.io/c/1/2/3", AFF, "impact", "affiliate"
    ),
    Case(
        "partnerstack source cpc",
        LP + "?utm_source=partnerstack&utm_medium=cpa",
        None,
        AFF,
        "partnerstack",
        "cpa",
    ),
    # --- Display ---
    Case(
        "display utm banner",
        LP + "?utm_source=programmatic&utm_medium=banner",
        None,
        DIS,
        "programmatic",
        "banner",
    ),
    Case("display utm cpm", LP + "?utm_source=dv360&utm_medium=cpm", None, DIS, "dv360", "cpm"),
    Case(
        "doubleclick referrer",
        LP,
        "https://ad.doubleclick.net/ddm/clk/1",
        DIS,
        "google display",
        "display",
    ),
    Case("taboola referrer", LP, "https://trc.taboola.com/", DIS, "taboola", "display"),
    Case(
        "criteo retargeting utm",
        LP + "?utm_source=criteo&utm_medium=retargeting",
        None,
        DIS,
        "criteo",
        "retargeting",
    ),
    # --- Referral ---
    Case("plain referral", LP, "https://www.g2.com/products/x/reviews", REF, "g2.com", "referral"),
    Case("github referral", LP, "https://github.com/org/repo", REF, "github.com", "referral"),
    Case(
        "utm medium referral",
        LP + "?utm_source=partner-site&utm_medium=referral",
        None,
        REF,
        "partner-site",
        "referral",
    ),
    Case(
        "stackoverflow referral",
        LP,
        "https://stackoverflow.com/questions/1",
        REF,
        "stackoverflow.com",
        "referral",
    ),
    # --- Direct, internal, self-referral, payment gateways ---
    Case("bare direct", LP, None, DIR, "(direct)", "(none)"),
    Case("bare direct empty referrer", LP, "   ", DIR, "(direct)", "(none)"),
    Case(
        "self-referral same host",
        LP,
        "https://www.example.com/blog/post",
        DIR,
        "(direct)",
        "(none)",
    ),
    Case("self-referral subdomain", LP, "https://app.example.com/login", DIR, "(direct)", "(none)"),
    Case(
        "self-referral second own domain",
        LP,
        "https://example-shop.io/cart",
        DIR,
        "(direct)",
        "(none)",
    ),
    Case(
        "internal utm misuse",
        LP + "?utm_source=homepage&utm_medium=banner&utm_campaign=hero",
        "https://www.example.com/",
        DIR,
        "(direct)",
        "(none)",
    ),
    Case(
        "internal utm misuse with gclid copied",
        LP + "?utm_source=google&utm_medium=cpc&gclid=x",
        "https://example.com/blog",
        DIR,
        "(direct)",
        "(none)",
    ),
    Case(
        "stripe checkout return",
        LP + "?session_id=cs_1",
        "https://checkout.stripe.com/c/pay/cs_1",
        DIR,
        "(direct)",
        "(none)",
    ),
    Case("paypal return", LP, "https://www.paypal.com/checkoutnow", DIR, "(direct)", "(none)"),
    Case("google sign-in return", LP, "https://accounts.google.com/", DIR, "(direct)", "(none)"),
    Case(
        "utm direct none",
        LP + "?utm_source=(direct)&utm_medium=(none)",
        None,
        DIR,
        "(direct)",
        "(none)",
    ),
    # --- Normalization and oddities ---
    Case(
        "uppercase and whitespace",
        LP + "?utm_source=%20Google%20&utm_medium=CPC%20",
        None,
        PS,
        "google",
        "cpc",
    ),
    Case("uppercase referrer host", LP, "HTTPS://WWW.BING.COM/", OS, "bing", "organic"),
    Case("referrer without scheme", LP, "www.google.com/search", OS, "google", "organic"),
    Case(
        "unknown paid source",
        LP + "?utm_source=capterra&utm_medium=cpc",
        None,
        PS,
        "capterra",
        "cpc",
    ),
    Case("paid other", LP + "?utm_source=capterra&utm_medium=paid", None, OTH, "capterra", "paid"),
    Case("unassigned medium", LP + "?utm_source=qr&utm_medium=print", None, OTH, "qr", "print"),
    Case(
        "campaign only no referrer",
        LP + "?utm_campaign=spring",
        None,
        OTH,
        "(not set)",
        "(not set)",
    ),
    Case(
        "campaign only with referrer",
        LP + "?utm_campaign=spring",
        "https://www.g2.com/",
        REF,
        "g2.com",
        "referral",
    ),
    Case(
        "medium only with search referrer",
        LP + "?utm_medium=cpc",
        "https://www.google.com/",
        PS,
        "google",
        "cpc",
    ),
    Case("no landing url", None, "https://www.google.com/", OS, "google", "organic"),
]


def test_at_least_sixty_cases_with_unique_ids() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_channel_table(case: Case) -> None:
    src = TrafficSource(
        landing_url=case.landing, referrer=case.referrer, click_ids=case.click_ids, **case.utm
    )
    got = classify(src, RULES)
    assert (got.channel, got.source, got.medium) == (case.channel, case.source, case.medium)


def test_fields_are_filled_and_landing_page_drops_query_and_fragment() -> None:
    got = classify(
        TrafficSource(
            landing_url="https://www.example.com/pricing?utm_source=LinkedIn&utm_medium=Paid_Social"
            "&utm_campaign=ABM Q4&utm_term=crm&utm_content=Video A&li_fat_id=f1#plans",
            referrer="https://www.linkedin.com/",
        ),
        RULES,
    )
    assert got == Classification(
        channel=Channel.PAID_SOCIAL,
        source="linkedin",
        medium="paid_social",
        campaign="ABM Q4",
        term="crm",
        content="Video A",
        referrer_host="linkedin.com",
        landing_page="https://www.example.com/pricing",
        click_ids={"li_fat_id": "f1"},
    )


def test_explicit_fields_win_over_landing_query() -> None:
    got = classify(
        TrafficSource(
            landing_url=LP + "?utm_source=google&utm_medium=cpc",
            referrer=None,
            utm_source="newsletter",
            utm_medium="email",
        ),
        RULES,
    )
    assert (got.channel, got.source, got.medium) == (Channel.EMAIL, "newsletter", "email")


def test_click_ids_are_normalized_and_unknown_ones_dropped() -> None:
    got = classify(
        TrafficSource(LP, None, click_ids={" GCLID ": " abc ", "dclid": "x", "fbclid": "  "}), RULES
    )
    assert dict(got.click_ids) == {"gclid": "abc"}
    assert got.channel is Channel.PAID_SEARCH


def test_offline_keeps_given_source_medium_campaign() -> None:
    got = classify(
        TrafficSource(
            None, None, utm_source="Trade Show", utm_campaign="SaaStr 2026", is_offline=True
        ),
        RULES,
    )
    assert (got.channel, got.source, got.medium, got.campaign) == (
        Channel.OFFLINE,
        "trade show",
        "offline",
        "SaaStr 2026",
    )
    assert got.campaign_key() != ()


def test_offline_wins_over_referrer_and_tags() -> None:
    got = classify(
        TrafficSource(
            LP, "https://www.google.com/", utm_source="phone", utm_medium="call", is_offline=True
        ),
        RULES,
    )
    assert (got.channel, got.medium) == (Channel.OFFLINE, "call")


def test_campaign_key_empty_for_direct_and_internal() -> None:
    assert classify(TrafficSource(LP, None), RULES).campaign_key() == ()
    internal = classify(
        TrafficSource(LP + "?utm_source=x&utm_medium=y", "https://example.com/"), RULES
    )
    assert internal.internal and internal.campaign_key() == ()
    gateway = classify(TrafficSource(LP, "https://checkout.stripe.com/"), RULES)
    assert gateway.internal and gateway.campaign_key() == ()


def test_campaign_key_distinguishes_campaigns_and_is_stable() -> None:
    def key(url: str, ref: str | None = None) -> tuple[str | None, ...]:
        return classify(TrafficSource(url, ref), RULES).campaign_key()

    a = key(LP + "?utm_source=google&utm_medium=cpc&utm_campaign=a")
    assert a == key("https://www.example.com/other?utm_source=Google&utm_medium=cpc&utm_campaign=a")
    assert a != key(LP + "?utm_source=google&utm_medium=cpc&utm_campaign=b")
    assert key(LP + "?gclid=1") != key(LP + "?gclid=2")  # a new ad click is a new campaign
    assert key(LP, "https://www.google.com/") != key(LP, "https://www.bing.com/")
    assert key(LP, "https://www.google.com/") == key(LP + "?q=1", "https://www.google.com/search")


def test_own_domains_are_normalized() -> None:
    rules = ChannelRules.default(own_domains=[" WWW.Example.COM. "])
    assert rules.own_domains == frozenset({"example.com"})
    assert is_internal_referrer("https://blog.example.com/x", "https://other.host/", rules)
    assert not is_internal_referrer("https://notexample.com/", "https://other.host/", rules)


def test_self_referral_without_configured_own_domains() -> None:
    rules = ChannelRules.default()
    assert is_internal_referrer("https://www.acme.io/a", "https://acme.io/b", rules)
    assert not is_internal_referrer(None, "https://acme.io/b", rules)
    assert not is_internal_referrer("https://www.google.com/", "https://acme.io/b", rules)


def test_ignored_referrers_are_configurable() -> None:
    rules = ChannelRules(
        own_domains=frozenset({"example.com"}), ignored_referrers=frozenset({"pay.vendor.test"})
    )
    assert (
        classify(TrafficSource(LP, "https://pay.vendor.test/ok"), rules).channel is Channel.DIRECT
    )
    # paypal is a referral once it is no longer in the configured list
    assert classify(TrafficSource(LP, "https://www.paypal.com/"), rules).channel is Channel.REFERRAL


def test_referrer_host() -> None:
    assert referrer_host("https://WWW.Google.COM:443/search?q=1") == "google.com"
    assert referrer_host("android-app://com.google.android.gm/") == "com.google.android.gm"
    assert referrer_host("http://[::1") is None
    assert referrer_host("") is None


def test_click_id_constants() -> None:
    assert set(CLICK_ID_KEYS) == {
        "gclid",
        "gbraid",
        "wbraid",
        "fbclid",
        "msclkid",
        "li_fat_id",
        "ttclid",
    }
    assert "fbclid" not in AD_ONLY_CLICK_IDS


def test_data_files_ship_with_the_package_and_name_their_sources() -> None:
    import json

    data = resources.files("services.stitcher.data")
    names = {p.name for p in data.iterdir() if p.name.endswith(".json")}
    assert {
        "search_engines.json",
        "social_networks.json",
        "email_providers.json",
        "affiliate_networks.json",
        "display_networks.json",
        "ignored_referrers.json",
    } <= names
    for name in names:
        doc = json.loads(data.joinpath(name).read_text(encoding="utf-8"))
        assert doc["sources"], name


_text = st.one_of(st.none(), st.text(max_size=60))
_urlish = st.one_of(
    _text,
    st.builds(
        lambda scheme, host, rest: f"{scheme}{host}{rest}",
        st.sampled_from(["https://", "http://", "android-app://", "//", "", "ftp://", "https://["]),
        st.text(max_size=30),
        st.text(max_size=30),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    landing=_urlish,
    referrer=_urlish,
    tags=st.lists(_text, min_size=5, max_size=5),
    click_ids=st.dictionaries(
        st.one_of(st.sampled_from(CLICK_ID_KEYS), st.text(max_size=8)), st.text(max_size=10)
    ),
    is_offline=st.booleans(),
    own=st.lists(st.text(max_size=20), max_size=3),
)
def test_classify_never_raises(
    landing: str | None,
    referrer: str | None,
    tags: list[str | None],
    click_ids: dict[str, str],
    is_offline: bool,
    own: list[str],
) -> None:
    rules = ChannelRules.default(own_domains=own)
    src = TrafficSource(landing, referrer, *tags, click_ids=click_ids, is_offline=is_offline)
    got = classify(src, rules)
    assert isinstance(got.channel, Channel)
    assert set(got.click_ids) <= set(CLICK_ID_KEYS)
    key = got.campaign_key()
    assert (key == ()) == (got.channel is Channel.DIRECT or got.internal)
    assert is_internal_referrer(referrer, landing, rules) in (True, False)


def test_classification_is_hashable_picklable_and_click_ids_read_only() -> None:
    import copy
    import json
    import pickle

    got = classify(TrafficSource(LP + "?gclid=AbC&fbclid=x", "https://www.google.com/"), RULES)
    assert isinstance(got.click_ids, dict)
    assert json.loads(json.dumps(got.click_ids)) == {
        "gclid": "AbC",
        "fbclid": "x",
    }  # value case kept
    assert {got, copy.deepcopy(got)} == {got}
    assert pickle.loads(pickle.dumps(got)) == got
    with pytest.raises(TypeError):
        got.click_ids["gclid"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("referrer", "channel"),
    [
        ("https://google.com.evil.example/", Channel.REFERRAL),
        ("https://notgoogle.com/", Channel.REFERRAL),
        ("https://google.example.org/", Channel.REFERRAL),
        ("https://images.google.com.br/", Channel.ORGANIC_SEARCH),
        ("https://www.google.de/", Channel.ORGANIC_SEARCH),
        ("https://mail.google.com/mail/u/0/", Channel.EMAIL),
        ("https://calendar.google.com/", Channel.REFERRAL),
        ("https://notfacebook.com/", Channel.REFERRAL),
        ("https://lm.facebook.com/l.php", Channel.ORGANIC_SOCIAL),
    ],
)
def test_list_matching_is_by_domain_not_substring(referrer: str, channel: Channel) -> None:
    assert classify(TrafficSource(LP, referrer), RULES).channel is channel


_real_sources = st.sampled_from(
    [
        "google",
        "bing",
        "facebook",
        "fb",
        "ig",
        "linkedin",
        "t.co",
        "reddit",
        "newsletter",
        "awin",
        "criteo",
        "x",
    ]
)
_real_mediums = st.sampled_from(
    [
        "cpc",
        "ppc",
        "paid_social",
        "organic",
        "social",
        "email",
        "affiliate",
        "display",
        "referral",
        "print",
    ]
)
_real_referrers = st.sampled_from(
    [
        None,
        "https://www.google.com/",
        "https://l.facebook.com/",
        "https://mail.google.com/",
        "https://g2.com/",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    src=_real_sources,
    med=_real_mediums,
    ref=_real_referrers,
    pad=st.sampled_from(["", " ", "\t", "  \n"]),
    upper=st.booleans(),
)
def test_tags_are_case_and_whitespace_insensitive(
    src: str, med: str, ref: str | None, pad: str, upper: bool
) -> None:
    def mangle(value: str) -> str:
        return pad + (value.upper() if upper else value.title()) + pad

    plain = classify(TrafficSource(LP, ref, utm_source=src, utm_medium=med), RULES)
    mangled = classify(
        TrafficSource(LP, ref, utm_source=mangle(src), utm_medium=mangle(med)), RULES
    )
    assert mangled == plain


@settings(max_examples=200, deadline=None)
@given(
    src=_real_sources,
    med=_real_mediums,
    click=st.sampled_from([{}, {"gclid": "a"}, {"fbclid": "b"}, {"li_fat_id": "c"}]),
    ref=st.sampled_from(
        [
            "https://www.example.com/",
            "https://app.example.com/x",
            "https://checkout.stripe.com/c/pay",
            "https://www.paypal.com/",
        ]
    ),
)
def test_internal_and_gateway_referrers_never_start_a_campaign(
    src: str, med: str, click: dict[str, str], ref: str
) -> None:
    got = classify(TrafficSource(LP, ref, utm_source=src, utm_medium=med, click_ids=click), RULES)
    assert got.channel is Channel.DIRECT and got.internal and got.campaign_key() == ()
