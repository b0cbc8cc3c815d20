"""Webhook signature schemes (closedloop, HubSpot v1/v2/v3, basic auth), checked in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime, timedelta

from services.common.errors import AuthenticationError
from services.crm_ingest.crms.base import Authentication

# HubSpot decodes these percent-escapes in the URI before signing (v3 docs).
_HUBSPOT_URI_DECODES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def closedloop_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Closedloop-Signature`` header value: ``t=<unix>,v1=<hex HMAC of "t.body">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_closedloop_signature(
    header: str | None, secret: str, body: bytes, now: datetime, tolerance: timedelta
) -> Authentication:
    """Check a ``t=…,v1=…`` header over the raw body; several v1 values (key rotation) allowed."""
    if not header:
        raise AuthenticationError("X-Closedloop-Signature header is missing")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit() or len(stamps[0]) > 12:
        raise AuthenticationError("X-Closedloop-Signature has no valid t=<unix seconds>")
    signed_at = int(stamps[0])
    _check_age(signed_at, now, tolerance)
    expected = closedloop_signature(secret, signed_at, body).split("v1=", 1)[1]
    if not any(_equal(expected, candidate) for candidate in parts.get("v1", [])):
        raise AuthenticationError("signature does not match")
    return Authentication(
        replay_key=f"closedloop:{expected}",
        replay_expires_at=now + tolerance + tolerance,
    )


def hubspot_uri(url: str) -> str:
    """The request URI as HubSpot signs it (certain percent-escapes decoded)."""
    for escaped, char in _HUBSPOT_URI_DECODES.items():
        url = url.replace(escaped, char).replace(escaped.lower(), char)
    return url


def hubspot_signature_v3(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """Base64 HMAC-SHA256 of method + URI + body + timestamp under the app's client secret."""
    message = method.upper().encode() + hubspot_uri(url).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def hubspot_signature_v2(secret: str, method: str, url: str, body: bytes) -> str:
    """Hex SHA-256 of client secret + method + URI + body."""
    return hashlib.sha256(
        secret.encode() + method.upper().encode() + url.encode() + body
    ).hexdigest()


def hubspot_signature_v1(secret: str, body: bytes) -> str:
    """Hex SHA-256 of client secret + body."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def verify_hubspot_signature(
    *,
    secret: str,
    method: str,
    url: str,
    body: bytes,
    signature_v3: str | None,
    timestamp: str | None,
    signature: str | None,
    signature_version: str | None,
    accepted_versions: frozenset[str],
    now: datetime,
    tolerance: timedelta,
) -> Authentication:
    """Check HubSpot's v3 signature (or v1/v2 where accepted) over the raw body."""
    if signature_v3 and "v3" in accepted_versions:
        if not timestamp or not timestamp.isdigit() or len(timestamp) > 15:
            raise AuthenticationError("X-HubSpot-Request-Timestamp is missing or not a number")
        _check_age(int(timestamp) // 1000, now, tolerance)
        expected = hubspot_signature_v3(secret, method, url, body, timestamp)
        if not _equal(expected, signature_v3.strip()):
            raise AuthenticationError("signature does not match")
        return Authentication(
            replay_key=f"hubspot:{expected}", replay_expires_at=now + tolerance + tolerance
        )
    version = (signature_version or "").strip().lower()
    if signature and version in accepted_versions and version in {"v1", "v2"}:
        if version == "v2":
            expected = hubspot_signature_v2(secret, method, url, body)
        else:
            expected = hubspot_signature_v1(secret, body)
        if not _equal(expected, signature.strip().lower()):
            raise AuthenticationError("signature does not match")
        return Authentication()
    raise AuthenticationError(
        f"no accepted HubSpot signature (accepted: {', '.join(sorted(accepted_versions))})"
    )


def verify_basic_auth(header: str | None, username: str, password: str) -> Authentication:
    """Check an ``Authorization: Basic`` header against the configured user and password."""
    if not password:
        raise AuthenticationError("basic auth is not configured")
    if not header or not header.lower().startswith("basic "):
        raise AuthenticationError("Authorization: Basic header is missing")
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AuthenticationError("Authorization header is not valid basic auth") from exc
    given_user, _, given_password = decoded.partition(":")
    user_ok = _equal(given_user, username)
    password_ok = _equal(given_password, password)
    if not (user_ok and password_ok):
        raise AuthenticationError("wrong user name or password")
    return Authentication()


def verify_token(given: str | None, expected: str) -> None:
    """Check a shared token (e.g. from the URL) in constant time."""
    if not given or not _equal(given, expected):
        raise AuthenticationError("token is missing or wrong")


def _check_age(signed_at: int, now: datetime, tolerance: timedelta) -> None:
    age = now.timestamp() - signed_at
    if abs(age) > tolerance.total_seconds():
        raise AuthenticationError(
            f"signature timestamp is {abs(age):.0f}s {'old' if age > 0 else 'ahead'}, "
            f"outside the {tolerance.total_seconds():.0f}s tolerance"
        )


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
