"""The CRM adapter interface, the deal changes adapters produce, and strict value parsers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from services.crm_ingest.errors import PayloadError

MAX_ID_LENGTH = 256
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class InboundRequest:
    """A webhook request as received: what signatures and parsers need, nothing else."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    media_type: str
    body: bytes
    received_at: datetime

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name (``headers`` keys are lower-case)."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Authentication:
    """A request that passed authentication; ``replay_key`` is refused again until it expires."""

    replay_key: str | None = None
    replay_expires_at: datetime | None = None


@dataclass(frozen=True)
class DealChange:
    """One deal-stage change as a CRM reported it, before stage mapping and lead hashing.

    ``email`` (and stage, pipeline, amount) may be missing when the CRM does not send
    them; ``lookup_id`` is then the ID a CRM API lookup starts from (the deal for
    HubSpot, the person for Pipedrive). A missing pipeline is "default".
    """

    index: int
    event_id: str
    deal_id: str
    occurred_at: datetime
    crm_stage: str | None
    pipeline: str | None = None
    email: str | None = None
    lookup_id: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    is_won: bool | None = None
    is_lost: bool | None = None
    deal_name: str | None = None
    raw: bytes | None = None


@dataclass(frozen=True)
class Rejection:
    """One unusable item of a delivery (or the whole body when ``index`` is None)."""

    field: str | None
    problem: str
    reason: str = "invalid_field"
    index: int | None = None
    delivery_id: str | None = None
    raw: bytes | None = None

    @classmethod
    def of(
        cls, error: PayloadError, index: int | None = None, delivery_id: str | None = None
    ) -> Rejection:
        """The rejection a PayloadError describes."""
        return cls(error.field, error.problem, error.reason, index, delivery_id)

    def as_json(self) -> dict[str, Any]:
        """The shape clients see in a response body."""
        return {
            "index": self.index,
            "field": self.field,
            "problem": self.problem,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Delivery:
    """What one webhook delivery holds: deal changes, unusable items, items not about deals."""

    changes: tuple[DealChange, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    ignored: int = 0
    delivery_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class CrmAdapter(Protocol):
    """A CRM's receiver: which bodies it reads, how it authenticates them, how it parses them."""

    crm: str
    media_types: frozenset[str]

    def authenticate(self, request: InboundRequest) -> Authentication:
        """Check credentials or the signature over the raw body; raise AuthenticationError."""
        ...

    def parse(self, request: InboundRequest) -> Delivery:
        """The deal changes of an authenticated body; raise PayloadError when none is usable."""
        ...

    def success_body(self, request: InboundRequest) -> tuple[bytes, str] | None:
        """A CRM-specific 2xx body and media type (SOAP acknowledgement), or None for JSON."""
        ...

    def storable_body(self, body: bytes) -> bytes:
        """The raw body as it may be kept on crm.invalid (credentials inside it blanked)."""
        ...


def text(value: Any, field_name: str, *, required: bool = True) -> str | None:
    """A non-empty string (numbers become strings, as CRMs send IDs either way)."""
    if value is None or value == "":
        if required:
            raise PayloadError(field_name, "is missing", "missing_field")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(field_name, "must be a string")
    result = str(value).strip()
    if not result:
        if required:
            raise PayloadError(field_name, "is missing", "missing_field")
        return None
    if len(result) > MAX_ID_LENGTH:
        raise PayloadError(field_name, f"is longer than {MAX_ID_LENGTH} characters")
    return result


def required_text(value: Any, field_name: str) -> str:
    """A non-empty string, or PayloadError naming the field."""
    result = text(value, field_name)
    assert result is not None  # text() raises when required and missing
    return result


def timestamp(value: Any, field_name: str) -> datetime:
    """An aware UTC datetime from ISO-8601 (with offset or Z; a bare date is midnight UTC),
    epoch milliseconds, or ``YYYY-MM-DD HH:MM:SS`` (UTC, as Pipedrive writes it)."""
    if value is None or value == "":
        raise PayloadError(field_name, "is missing", "missing_field")
    if isinstance(value, bool):
        raise PayloadError(field_name, "must be ISO-8601 or epoch milliseconds")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            millis = int(value)
            result = datetime.fromtimestamp(millis / 1000, UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise PayloadError(field_name, "is not a valid epoch-milliseconds time") from exc
    elif isinstance(value, str):
        raw = value.strip().replace(" ", "T", 1) if " " in value.strip() else value.strip()
        try:
            result = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise PayloadError(field_name, "must be ISO-8601 or epoch milliseconds") from exc
        if result.tzinfo is None:
            result = result.replace(tzinfo=UTC)
    else:
        raise PayloadError(field_name, "must be ISO-8601 or epoch milliseconds")
    if not 1970 <= result.year <= 9999:
        raise PayloadError(field_name, "is out of range")
    return result.astimezone(UTC)


def amount(value: Any, field_name: str) -> Decimal | None:
    """A non-negative decimal with at most 16 integer digits, rounded to cents; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise PayloadError(field_name, "must be a decimal number")
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise PayloadError(field_name, "must be a decimal number") from exc
    if not result.is_finite():
        raise PayloadError(field_name, "must be a finite number")
    if result < 0:
        raise PayloadError(field_name, "must not be negative")
    if result >= Decimal(10) ** 16:
        raise PayloadError(field_name, "is too large (at most 16 integer digits)")
    return result.quantize(Decimal("0.01"))


def currency(value: Any, field_name: str) -> str | None:
    """An ISO 4217 code, upper-cased; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CURRENCY.match(value.strip().upper()):
        raise PayloadError(field_name, "must be an ISO 4217 currency code such as EUR")
    return value.strip().upper()


def flag(value: Any, field_name: str) -> bool | None:
    """A boolean (JSON true/false or the strings "true"/"false"); None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise PayloadError(field_name, "must be true or false")
