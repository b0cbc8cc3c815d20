"""Lead IDs: the keyed hash of a normalized e-mail address, one implementation for every service."""

from __future__ import annotations

import hashlib
import hmac

from services.common.settings import IdentitySettings

_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


class InvalidEmailError(ValueError):
    """The value is not an e-mail address we can turn into a lead ID."""


def normalize_email(
    email: str, *, gmail_remove_dots: bool = True, strip_plus_tags: bool = False
) -> str:
    """Trimmed, lower-cased address; gmail dots and '+tags' removed where configured.

    googlemail.com is folded into gmail.com, and gmail '+tags' are always dropped,
    because Gmail delivers both to the same mailbox.
    """
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or " " in address:
        raise InvalidEmailError(f"not an e-mail address: {email!r}")
    if domain in _GMAIL_DOMAINS:
        domain = "gmail.com"
        local = local.split("+", 1)[0]
        if gmail_remove_dots:
            local = local.replace(".", "")
    elif strip_plus_tags:
        local = local.split("+", 1)[0]
    if not local:
        raise InvalidEmailError(f"not an e-mail address: {email!r}")
    return f"{local}@{domain}"


def lead_id_for_email(email: str, settings: IdentitySettings) -> str:
    """HMAC-SHA256 (hex) of the normalized address under the deployment secret."""
    normalized = normalize_email(
        email,
        gmail_remove_dots=settings.gmail_remove_dots,
        strip_plus_tags=settings.strip_plus_tags,
    )
    key = settings.secret.get_secret_value().encode()
    return hmac.new(key, normalized.encode(), hashlib.sha256).hexdigest()
