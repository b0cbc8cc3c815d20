"""Signature schemes of the CRM receivers: documented vectors, tolerance, tampering, basic auth."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import AuthenticationError
from services.crm_ingest.signatures import (
    closedloop_signature,
    hubspot_signature_v1,
    hubspot_signature_v2,
    hubspot_signature_v3,
    hubspot_uri,
    verify_basic_auth,
    verify_closedloop_signature,
    verify_hubspot_signature,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TOLERANCE = timedelta(seconds=300)
BODY = b'{"event_id":"e1"}'


def test_closedloop_signature_is_hmac_of_t_dot_body() -> None:
    t = int(NOW.timestamp())
    expected = hmac.new(b"s3cret", f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert closedloop_signature("s3cret", t, BODY) == f"t={t},v1={expected}"


def test_closedloop_signature_accepts_a_fresh_signature_and_names_a_replay_key() -> None:
    header = closedloop_signature("s3cret", int(NOW.timestamp()) - 299, BODY)
    auth = verify_closedloop_signature(header, "s3cret", BODY, NOW, TOLERANCE)
    assert auth.replay_key is not None and auth.replay_expires_at is not None
    assert auth.replay_expires_at > NOW + TOLERANCE


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=abc", "t=<unix seconds>"),
        ("t=abc,v1=abc", "t=<unix seconds>"),
        ("t=1,t=2,v1=abc", "t=<unix seconds>"),
    ],
)
def test_closedloop_signature_malformed_headers(header: str | None, problem: str) -> None:
    with pytest.raises(AuthenticationError, match=problem):
        verify_closedloop_signature(header, "s3cret", BODY, NOW, TOLERANCE)


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_closedloop_signature_outside_tolerance_is_refused(offset: int) -> None:
    header = closedloop_signature("s3cret", int(NOW.timestamp()) + offset, BODY)
    with pytest.raises(AuthenticationError, match="tolerance"):
        verify_closedloop_signature(header, "s3cret", BODY, NOW, TOLERANCE)


def test_closedloop_signature_over_another_body_or_secret_is_refused() -> None:
    header = closedloop_signature("s3cret", int(NOW.timestamp()), BODY)
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_closedloop_signature(header, "s3cret", BODY + b" ", NOW, TOLERANCE)
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_closedloop_signature(header, "other", BODY, NOW, TOLERANCE)


def test_closedloop_signature_rotation_any_v1_may_match() -> None:
    t = int(NOW.timestamp())
    good = closedloop_signature("new", t, BODY).split("v1=")[1]
    header = f"t={t},v1={'0' * 64},v1={good}"
    verify_closedloop_signature(header, "new", BODY, NOW, TOLERANCE)


def test_hubspot_v1_documented_example() -> None:
    # https://developers.hubspot.com/docs/faq/v1-request-validation
    secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
    body = (
        b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
        b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    assert (
        hubspot_signature_v1(secret, body)
        == "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )


def test_hubspot_v2_documented_get_example() -> None:
    # https://developers.hubspot.com/docs/faq/v2-request-validation
    secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
    assert (
        hubspot_signature_v2(secret, "GET", "https://www.example.com/webhook_uri", b"")
        == "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    )


def test_hubspot_v3_is_base64_hmac_of_method_uri_body_timestamp() -> None:
    url, ts = "https://hooks.example.com/v1/webhooks/hubspot", "1772366400000"
    digest = hmac.new(b"secret", b"POST" + url.encode() + BODY + ts.encode(), hashlib.sha256)
    assert (
        hubspot_signature_v3("secret", "POST", url, BODY, ts)
        == base64.b64encode(digest.digest()).decode()
    )


def test_hubspot_uri_decodes_the_documented_escapes_only() -> None:
    assert hubspot_uri("https://x/a%3Ab%2Fc%3Fd%40e%21%24%27%28%29%2A%2C%3B") == (
        "https://x/a:b/c?d@e!$'()*,;"
    )
    assert hubspot_uri("https://x/a%20b%3a") == "https://x/a%20b:"


def _v3(
    *,
    signature: str,
    timestamp: str,
    versions: frozenset[str] = frozenset({"v3"}),
    body: bytes = BODY,
) -> None:
    verify_hubspot_signature(
        secret="secret",
        method="POST",
        url="https://hooks.example.com/v1/webhooks/hubspot",
        body=body,
        signature_v3=signature,
        timestamp=timestamp,
        signature=None,
        signature_version=None,
        accepted_versions=versions,
        now=NOW,
        tolerance=TOLERANCE,
    )


def test_hubspot_v3_accepts_valid_and_refuses_stale_or_tampered() -> None:
    url = "https://hooks.example.com/v1/webhooks/hubspot"
    ts = str(int(NOW.timestamp() * 1000) - 60_000)
    good = hubspot_signature_v3("secret", "POST", url, BODY, ts)
    _v3(signature=good, timestamp=ts)
    stale = str(int(NOW.timestamp() * 1000) - 301_000)
    with pytest.raises(AuthenticationError, match="tolerance"):
        _v3(signature=hubspot_signature_v3("secret", "POST", url, BODY, stale), timestamp=stale)
    with pytest.raises(AuthenticationError, match="does not match"):
        _v3(signature=good, timestamp=ts, body=BODY.replace(b"e1", b"e2"))
    with pytest.raises(AuthenticationError, match="not a number"):
        _v3(signature=good, timestamp="soon")
    with pytest.raises(AuthenticationError, match="no accepted"):
        _v3(signature=good, timestamp=ts, versions=frozenset({"v1"}))


def test_hubspot_v1_only_where_configured() -> None:
    signature = hubspot_signature_v1("secret", BODY)
    kwargs = {
        "secret": "secret",
        "method": "POST",
        "url": "https://x/",
        "body": BODY,
        "signature_v3": None,
        "timestamp": None,
        "signature": signature,
        "signature_version": "v1",
        "now": NOW,
        "tolerance": TOLERANCE,
    }
    auth = verify_hubspot_signature(accepted_versions=frozenset({"v1", "v3"}), **kwargs)  # type: ignore[arg-type]
    assert auth.replay_key is None
    with pytest.raises(AuthenticationError):
        verify_hubspot_signature(accepted_versions=frozenset({"v3"}), **kwargs)  # type: ignore[arg-type]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth() -> None:
    verify_basic_auth(_basic("closedloop", "pw:with:colons"), "closedloop", "pw:with:colons")
    for header in [
        None,
        "Bearer x",
        "Basic !!!",
        _basic("closedloop", "wrong"),
        _basic("other", "pw:with:colons"),
    ]:
        with pytest.raises(AuthenticationError):
            verify_basic_auth(header, "closedloop", "pw:with:colons")
    with pytest.raises(AuthenticationError, match="not configured"):
        verify_basic_auth(_basic("closedloop", ""), "closedloop", "")
