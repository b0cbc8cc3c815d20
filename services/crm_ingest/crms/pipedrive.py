"""Pipedrive receiver: webhooks v2 (create.deal, change.deal) with HTTP basic auth."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.crm_ingest.crms.base import (
    Authentication,
    DealChange,
    Delivery,
    InboundRequest,
    amount,
    currency,
    required_text,
    text,
    timestamp,
)
from services.crm_ingest.crms.generic import parse_json_object
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.signatures import verify_basic_auth

# A change.deal is a DealStageChanged only when one of these fields changed.
TRACKED_FIELDS = frozenset({"stage_id", "status", "value", "currency", "pipeline_id"})


class PipedriveAdapter:
    """Pipedrive general webhooks v2 for deals."""

    crm = "pipedrive"
    media_types = frozenset({"application/json"})

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password

    def authenticate(self, request: InboundRequest) -> Authentication:
        """Check the HTTP basic-auth credentials set on the webhook."""
        return verify_basic_auth(request.header("Authorization"), self._username, self._password)

    def parse(self, request: InboundRequest) -> Delivery:
        """The deal change of one v2 notification; other entities and actions are ignored."""
        body = parse_json_object(request.body)
        meta = body.get("meta")
        if not isinstance(meta, dict):
            raise PayloadError("meta", "must be an object", "missing_field")
        delivery_id = text(meta.get("id"), "meta.id", required=False)
        try:
            change = self._change(meta, body)
        except PayloadError as exc:
            exc.delivery_id = delivery_id
            raise
        if change is None:
            return Delivery(ignored=1, delivery_id=delivery_id)
        return Delivery((change,), delivery_id=delivery_id)

    def _change(self, meta: Mapping[str, Any], body: Mapping[str, Any]) -> DealChange | None:
        if str(meta.get("version", "")).split(".")[0] != "2":
            raise PayloadError("meta.version", "only Pipedrive webhooks v2 are supported")
        action = meta.get("action")
        if meta.get("entity") != "deal" or action not in ("create", "change"):
            return None
        data = body.get("data")
        if not isinstance(data, dict):
            raise PayloadError("data", "must be an object", "missing_field")
        previous = body.get("previous")
        changed = set(previous) if isinstance(previous, dict) else set()
        if action == "change" and changed and not changed & TRACKED_FIELDS:
            return None
        deal_id = required_text(data.get("id"), "data.id")
        status = text(data.get("status"), "data.status", required=False)
        event = text(meta.get("id"), "meta.id", required=False)
        if event is None:
            event = f"{meta.get('company_id')}:{deal_id}:{meta.get('timestamp')}"
        person = data.get("person_id")
        if isinstance(person, dict):  # v1-style expanded person
            person = person.get("value")
        money = amount(data.get("value"), "data.value")
        return DealChange(
            index=0,
            event_id=f"pipedrive:{event}",
            deal_id=deal_id,
            occurred_at=_occurred_at(meta, data, changed, status, action == "create"),
            crm_stage=required_text(data.get("stage_id"), "data.stage_id"),
            pipeline=text(data.get("pipeline_id"), "data.pipeline_id", required=False),
            lookup_id=text(person, "data.person_id", required=False),
            amount=money,
            currency=currency(data.get("currency"), "data.currency"),
            is_won=status == "won",
            is_lost=status == "lost",
            deal_name=text(data.get("title"), "data.title", required=False),
        )

    def success_body(self, request: InboundRequest) -> tuple[bytes, str] | None:
        """JSON, the default."""
        return None

    def storable_body(self, body: bytes) -> bytes:
        """The body as received (it holds no credentials)."""
        return body


def _occurred_at(
    meta: Mapping[str, Any],
    data: Mapping[str, Any],
    changed: set[str],
    status: str | None,
    created: bool,
) -> datetime:
    """The time of the change in Pipedrive: of the status or stage change, else the update."""
    candidates: list[tuple[str, Any]] = []
    if "status" in changed and status in {"won", "lost"}:
        candidates += [(f"data.{status}_time", data.get(f"{status}_time"))]
        candidates += [("data.close_time", data.get("close_time"))]
    if "stage_id" in changed:
        candidates += [("data.stage_change_time", data.get("stage_change_time"))]
    candidates += [("data.update_time", data.get("update_time"))]
    if created:
        candidates.insert(0, ("data.add_time", data.get("add_time")))
    for field_name, value in candidates:
        if value:
            return timestamp(value, field_name)
    stamp = meta.get("timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool) and stamp < 100_000_000_000:
        return datetime.fromtimestamp(stamp, UTC)  # seconds, as some v2 deliveries carry it
    return timestamp(stamp, "meta.timestamp")
