"""The HTTP edge's documented shapes: response bodies and each receiver's request body schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RejectedItem(BaseModel):
    """One unusable item of a delivery."""

    index: int | None = Field(description="Position in a batch; null for the whole body.")
    field: str | None = Field(description="The offending field, when one is to blame.")
    problem: str = Field(description="What is wrong with it.")
    reason: str = Field(description="Machine-readable reason, e.g. missing_field, unknown_stage.")


class Accepted(BaseModel):
    """The broker acknowledged every usable deal change of the delivery."""

    accepted: int = Field(description="Deal-stage events published now.")
    duplicates: int = Field(description="Events already delivered earlier (not published again).")
    ignored: int = Field(description="Items that are not deal-stage changes (other objects).")
    rejected: list[RejectedItem] = Field(description="Unusable items, copied to crm.invalid.")
    event_ids: list[str] = Field(description="Deterministic IDs of the usable deal changes.")


class ErrorDetail(BaseModel):
    """What went wrong: never an echo of the body or of a secret."""

    status: int
    reason: str
    field: str | None = None
    problem: str


class ErrorBody(BaseModel):
    """Every non-2xx answer."""

    error: ErrorDetail
    rejected: list[RejectedItem] = Field(default_factory=list)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Authenticated but unusable (copied to crm.invalid)."},
    401: {"model": ErrorBody, "description": "Missing or wrong credentials, stale or replayed."},
    413: {"model": ErrorBody, "description": "Body larger than CRM_INGEST_MAX_BODY_BYTES."},
    415: {"model": ErrorBody, "description": "Content-Type this receiver does not read."},
    503: {
        "model": ErrorBody,
        "description": "Broker (or CRM API) unavailable; retry after Retry-After seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}

_TIME = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]}
_AMOUNT = {"oneOf": [{"type": "string", "pattern": r"^\d+(\.\d+)?$"}, {"type": "number"}]}

GENERIC_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event_id", "deal_id", "email", "stage", "occurred_at"],
    "properties": {
        "event_id": {"type": "string", "description": "Unique per change; retries reuse it."},
        "deal_id": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "pipeline": {"type": "string", "default": "default"},
        "stage": {"type": "string", "description": "CRM stage (mapped) or a canonical stage."},
        "amount": _AMOUNT,
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "occurred_at": _TIME,
        "deal_name": {"type": "string"},
        "is_won": {"type": "boolean"},
        "is_lost": {"type": "boolean"},
    },
}

HUBSPOT_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["eventId", "portalId", "subscriptionType", "objectId", "occurredAt"],
    "properties": {
        "eventId": {"type": "integer"},
        "subscriptionId": {"type": "integer"},
        "portalId": {"type": "integer"},
        "appId": {"type": "integer"},
        "occurredAt": {"type": "integer"},
        "subscriptionType": {"type": "string", "example": "deal.propertyChange"},
        "attemptNumber": {"type": "integer"},
        "objectId": {"type": "integer"},
        "objectTypeId": {"type": "string"},
        "propertyName": {"type": "string"},
        "propertyValue": {"type": "string"},
        "changeSource": {"type": "string"},
    },
}

HUBSPOT_BODY: dict[str, Any] = {
    "oneOf": [
        {"type": "array", "items": HUBSPOT_EVENT, "description": "Webhook subscription batch."},
        {
            "type": "object",
            "description": "Workflow 'Send a webhook': the deal's properties (flat, or "
            "HubSpot's {properties: {name: {value, timestamp}}} form).",
            "properties": {
                "portalId": {"type": "integer"},
                "objectId": {"type": "integer"},
                "properties": {"type": "object"},
                "hs_object_id": {"type": "string"},
                "dealstage": {"type": "string"},
                "amount": {"type": "string"},
                "email": {"type": "string"},
            },
        },
    ]
}

PIPEDRIVE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["meta", "data"],
    "properties": {
        "meta": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["create", "change", "delete"]},
                "entity": {"type": "string", "example": "deal"},
                "id": {"type": "string"},
                "entity_id": {"type": "string"},
                "version": {"type": "string", "example": "2.0"},
                "timestamp": _TIME,
            },
        },
        "data": {"type": "object"},
        "previous": {"type": ["object", "null"]},
    },
}

SALESFORCE_FLOW_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["OrganizationId", "Opportunity"],
    "properties": {
        "OrganizationId": {"type": "string"},
        "EventId": {"type": "string"},
        "Opportunity": {
            "type": "object",
            "properties": {
                "Id": {"type": "string"},
                "StageName": {"type": "string"},
                "Amount": _AMOUNT,
                "CurrencyIsoCode": {"type": "string"},
                "IsClosed": {"type": "boolean"},
                "IsWon": {"type": "boolean"},
                "LastModifiedDate": {"type": "string", "format": "date-time"},
                "Name": {"type": "string"},
            },
        },
    },
}


def request_body(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An ``openapi_extra`` request body of media type -> JSON schema."""
    return {
        "requestBody": {
            "required": True,
            "content": {media: {"schema": schema} for media, schema in content.items()},
        }
    }


def header(name: str, description: str) -> dict[str, Any]:
    """An optional header parameter."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }
