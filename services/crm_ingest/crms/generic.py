"""Generic receiver: the documented closedloop JSON body, signed with X-Closedloop-Signature."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from services.crm_ingest.crms.base import (
    Authentication,
    DealChange,
    Delivery,
    InboundRequest,
    amount,
    currency,
    flag,
    required_text,
    text,
    timestamp,
)
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.signatures import verify_closedloop_signature

SIGNATURE_HEADER = "X-Closedloop-Signature"
FIELDS = frozenset(
    {
        "event_id",
        "deal_id",
        "email",
        "pipeline",
        "stage",
        "amount",
        "currency",
        "occurred_at",
        "deal_name",
        "is_won",
        "is_lost",
    }
)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or PayloadError(malformed_body)."""
    value = parse_json(body)
    if not isinstance(value, dict):
        raise PayloadError(None, "the body must be a JSON object", "malformed_body")
    return value


def parse_json(body: bytes) -> Any:
    """The body as JSON (UTF-8), or PayloadError(malformed_body)."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadError(None, f"the body is not valid JSON: {exc}", "malformed_body") from exc


class GenericAdapter:
    """Any CRM that can post the documented JSON body with an HMAC header."""

    crm = "generic"
    media_types = frozenset({"application/json"})

    def __init__(self, secret: str, tolerance: timedelta) -> None:
        self._secret = secret
        self._tolerance = tolerance

    def authenticate(self, request: InboundRequest) -> Authentication:
        """Check ``X-Closedloop-Signature`` over the raw body."""
        return verify_closedloop_signature(
            request.header(SIGNATURE_HEADER),
            self._secret,
            request.body,
            request.received_at,
            self._tolerance,
        )

    def parse(self, request: InboundRequest) -> Delivery:
        """One deal change from the documented body; unknown fields are refused by name."""
        body = parse_json_object(request.body)
        delivery_id = body.get("event_id") if isinstance(body.get("event_id"), str) else None
        try:
            change = self._change(body)
        except PayloadError as exc:
            exc.delivery_id = delivery_id
            raise
        return Delivery(changes=(change,), delivery_id=delivery_id)

    def _change(self, body: dict[str, Any]) -> DealChange:
        unknown = sorted(set(body) - FIELDS)
        if unknown:
            raise PayloadError(unknown[0], "is not a field of the generic webhook", "unknown_field")
        event_id = required_text(body.get("event_id"), "event_id")
        money = amount(body.get("amount"), "amount")
        code = currency(body.get("currency"), "currency")
        if money is not None and code is None:
            raise PayloadError("currency", "is required with amount", "missing_field")
        return DealChange(
            index=0,
            event_id=f"generic:{event_id}",
            deal_id=required_text(body.get("deal_id"), "deal_id"),
            occurred_at=timestamp(body.get("occurred_at"), "occurred_at"),
            crm_stage=required_text(body.get("stage"), "stage"),
            pipeline=text(body.get("pipeline"), "pipeline", required=False) or "default",
            email=required_text(body.get("email"), "email"),
            amount=money,
            currency=code,
            is_won=flag(body.get("is_won"), "is_won"),
            is_lost=flag(body.get("is_lost"), "is_lost"),
            deal_name=text(body.get("deal_name"), "deal_name", required=False),
        )

    def success_body(self, request: InboundRequest) -> tuple[bytes, str] | None:
        """JSON, the default."""
        return None

    def storable_body(self, body: bytes) -> bytes:
        """The body as received (it holds no credentials)."""
        return body
