"""Lead IDs: normalization rules and the keyed hash."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from services.common.leads import InvalidEmailError, lead_id_for_email, normalize_email
from services.common.settings import IdentitySettings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("jane.doe@gmail.com", "janedoe@gmail.com"),
        ("Jane.Doe+news@googlemail.com", "janedoe@gmail.com"),
        ("jane+news@example.com", "jane+news@example.com"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


def test_plus_tags_are_stripped_when_configured() -> None:
    assert normalize_email("jane+news@example.com", strip_plus_tags=True) == "jane@example.com"


def test_gmail_dots_kept_when_configured() -> None:
    assert normalize_email("j.doe@gmail.com", gmail_remove_dots=False) == "j.doe@gmail.com"


@pytest.mark.parametrize("raw", ["", "jane", "@example.com", "jane@localhost", "ja ne@example.com"])
def test_not_an_email(raw: str) -> None:
    with pytest.raises(InvalidEmailError):
        normalize_email(raw)


def test_lead_id_is_hmac_sha256_of_normalized_address() -> None:
    settings = IdentitySettings(secret=SecretStr("s3cret"))
    expected = hmac.new(b"s3cret", b"jane@example.com", hashlib.sha256).hexdigest()
    assert lead_id_for_email(" JANE@example.com", settings) == expected
    assert (
        lead_id_for_email("jane@example.com", IdentitySettings(secret=SecretStr("other")))
        != expected
    )
