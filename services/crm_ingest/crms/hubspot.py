"""HubSpot receiver: webhook subscription batches and workflow "Send a webhook" bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from services.crm_ingest.crms.base import (
    Authentication,
    DealChange,
    Delivery,
    InboundRequest,
    Rejection,
    amount,
    currency,
    required_text,
    text,
    timestamp,
)
from services.crm_ingest.crms.generic import parse_json
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.signatures import verify_hubspot_signature

DEAL_OBJECT_TYPE_ID = "0-3"
# Deal properties whose change is a DealStageChanged (a new stage, or a new amount).
TRACKED_PROPERTIES = frozenset({"dealstage", "amount", "deal_currency_code", "pipeline"})
MAX_BATCH = 1000


class HubSpotAdapter:
    """HubSpot app webhooks (signature v3, v1/v2 where configured)."""

    crm = "hubspot"
    media_types = frozenset({"application/json"})

    def __init__(
        self,
        client_secret: str,
        accepted_versions: frozenset[str],
        tolerance: timedelta,
        public_url: str | None = None,
    ) -> None:
        self._secret = client_secret
        self._versions = accepted_versions
        self._tolerance = tolerance
        self._public_url = public_url.rstrip("/") if public_url else None

    def signed_url(self, request: InboundRequest) -> str:
        """The URL HubSpot called: the request's, or the configured public base + path/query."""
        if self._public_url is None:
            return request.url
        path = request.url.split("://", 1)[-1]
        path = path[path.find("/") :] if "/" in path else "/"
        return self._public_url + path

    def authenticate(self, request: InboundRequest) -> Authentication:
        """Check the HubSpot signature over method, URI, raw body (and timestamp for v3)."""
        return verify_hubspot_signature(
            secret=self._secret,
            method=request.method,
            url=self.signed_url(request),
            body=request.body,
            signature_v3=request.header("X-HubSpot-Signature-v3"),
            timestamp=request.header("X-HubSpot-Request-Timestamp"),
            signature=request.header("X-HubSpot-Signature"),
            signature_version=request.header("X-HubSpot-Signature-Version"),
            accepted_versions=self._versions,
            now=request.received_at,
            tolerance=self._tolerance,
        )

    def parse(self, request: InboundRequest) -> Delivery:
        """A subscription batch (JSON array of events) or one workflow webhook (JSON object)."""
        body = parse_json(request.body)
        if isinstance(body, dict) and "subscriptionType" in body:
            body = [body]
        if isinstance(body, list):
            return _parse_subscription_batch(body)
        if isinstance(body, dict):
            return _parse_workflow(body)
        raise PayloadError(None, "the body must be a JSON array or object", "malformed_body")

    def success_body(self, request: InboundRequest) -> tuple[bytes, str] | None:
        """JSON, the default."""
        return None

    def storable_body(self, body: bytes) -> bytes:
        """The body as received (it holds no credentials)."""
        return body


def _parse_subscription_batch(events: list[Any]) -> Delivery:
    if not events:
        raise PayloadError(None, "the batch holds no events", "malformed_body")
    if len(events) > MAX_BATCH:
        raise PayloadError(None, f"more than {MAX_BATCH} events in one batch", "malformed_body")
    changes: list[DealChange] = []
    rejections: list[Rejection] = []
    ignored = 0
    for index, event in enumerate(events):
        raw = json.dumps(event, separators=(",", ":")).encode()
        delivery_id = None
        try:
            if not isinstance(event, dict):
                raise PayloadError(f"[{index}]", "must be a JSON object", "malformed_body")
            delivery_id = _event_key(event)
            change = _subscription_change(index, event)
        except PayloadError as exc:
            field = exc.field
            if field is not None and not field.startswith("["):
                field = f"[{index}].{field}"
            rejections.append(Rejection(field, exc.problem, exc.reason, index, delivery_id, raw))
            continue
        if change is None:
            ignored += 1
        else:
            changes.append(change)
    return Delivery(tuple(changes), tuple(rejections), ignored)


def _event_key(event: Mapping[str, Any]) -> str | None:
    portal, event_id = event.get("portalId"), event.get("eventId")
    if portal is None or event_id is None:
        return None
    return f"{portal}:{event_id}"


def _subscription_change(index: int, event: Mapping[str, Any]) -> DealChange | None:
    # Values are compared only as strings: a JSON object there must not reach a set lookup.
    subscription = _string(event.get("subscriptionType"))
    is_deal = subscription in {"deal.creation", "deal.propertyChange"} or (
        subscription in {"object.creation", "object.propertyChange"}
        and _string(event.get("objectTypeId")) == DEAL_OBJECT_TYPE_ID
    )
    if not is_deal:
        return None
    property_name = _string(event.get("propertyName"))
    is_change = str(subscription).endswith("propertyChange")
    if is_change and property_name not in TRACKED_PROPERTIES:
        return None
    portal = required_text(event.get("portalId"), "portalId")
    event_id = required_text(event.get("eventId"), "eventId")
    deal_id = required_text(event.get("objectId"), "objectId")
    value = event.get("propertyValue") if is_change else None
    return DealChange(
        index=index,
        event_id=f"hubspot:{portal}:{event_id}",
        deal_id=deal_id,
        occurred_at=timestamp(event.get("occurredAt"), "occurredAt"),
        crm_stage=text(value, "propertyValue") if property_name == "dealstage" else None,
        pipeline=text(value, "propertyValue") if property_name == "pipeline" else None,
        amount=amount(value, "propertyValue") if property_name == "amount" else None,
        currency=currency(value, "propertyValue")
        if property_name == "deal_currency_code"
        else None,
        lookup_id=deal_id,
    )


def _parse_workflow(body: Mapping[str, Any]) -> Delivery:
    """A workflow webhook: HubSpot's full deal JSON, or a custom body of flat properties."""
    nested = body.get("properties")
    props: dict[str, Any] = {}
    stamps: dict[str, Any] = {}
    if isinstance(nested, dict):
        for name, value in nested.items():
            if isinstance(value, dict):
                props[name] = value.get("value")
                stamps[name] = value.get("timestamp")
            else:
                props[name] = value
    else:
        props = dict(body)
    deal_ref = body.get("dealId") or body.get("objectId") or props.get("hs_object_id")
    delivery_id = str(deal_ref) if isinstance(deal_ref, int | str) else None
    try:
        deal_id = required_text(deal_ref, "hs_object_id")
        stage = text(props.get("dealstage"), "dealstage", required=False)
        when = (
            stamps.get("dealstage")
            or props.get("hs_lastmodifieddate")
            or body.get("occurredAt")
            or body.get("occurred_at")
        )
        occurred_at = timestamp(when, "hs_lastmodifieddate")
        email = props.get("email") or body.get("email")
        change = DealChange(
            index=0,
            event_id=(
                f"hubspot:{body.get('portalId', 'workflow')}:workflow:{deal_id}:"
                f"{stage or ''}:{int(occurred_at.timestamp() * 1000)}"
            ),
            deal_id=deal_id,
            occurred_at=occurred_at,
            crm_stage=stage,
            pipeline=text(props.get("pipeline"), "pipeline", required=False),
            email=text(email, "email", required=False),
            lookup_id=deal_id,
            amount=amount(props.get("amount"), "amount"),
            currency=currency(props.get("deal_currency_code"), "deal_currency_code"),
            deal_name=text(props.get("dealname"), "dealname", required=False),
        )
    except PayloadError as exc:
        exc.delivery_id = delivery_id
        raise
    return Delivery(changes=(change,), delivery_id=delivery_id)


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None
