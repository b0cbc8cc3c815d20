"""Salesforce receiver: Outbound Messages (SOAP) and Flow JSON callouts for Opportunities."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from xml.etree.ElementTree import Element  # noqa: S405 - type only; parsing goes through defusedxml

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from services.common.errors import AuthenticationError
from services.crm_ingest.crms.base import (
    Authentication,
    DealChange,
    Delivery,
    InboundRequest,
    Rejection,
    amount,
    currency,
    flag,
    required_text,
    text,
    timestamp,
)
from services.crm_ingest.crms.generic import parse_json_object
from services.crm_ingest.errors import PayloadError
from services.crm_ingest.signatures import verify_closedloop_signature, verify_token

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
SIGNATURE_HEADER = "X-Closedloop-Signature"
SOAP_MEDIA_TYPES = frozenset({"text/xml", "application/soap+xml"})
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack>"
    b"</notificationsResponse>"
    b"</soapenv:Body>"
    b"</soapenv:Envelope>"
)
_SESSION_ID = re.compile(rb"(<(?:\w+:)?SessionId\b[^>]*>)[^<]*(</)", re.IGNORECASE)


def redact_session_id(body: bytes) -> bytes:
    """The body with the Outbound Message's API session ID blanked (it is a credential)."""
    return _SESSION_ID.sub(rb"\1(redacted)\2", body)


def _org15(org_id: str) -> str:
    """18-character Salesforce IDs are the 15-character ID plus a case checksum."""
    return org_id.strip()[:15]


class SalesforceAdapter:
    """Opportunity changes from Outbound Messages (org ID, optional URL token) or Flows (HMAC)."""

    crm = "salesforce"
    media_types = SOAP_MEDIA_TYPES | {"application/json"}

    def __init__(
        self,
        organization_ids: list[str],
        outbound_token: str | None,
        flow_secret: str,
        email_field: str,
        pipeline_field: str,
        tolerance: timedelta,
    ) -> None:
        self._orgs = frozenset(_org15(org) for org in organization_ids)
        self._token = outbound_token or None
        self._flow_secret = flow_secret
        self._email_field = email_field
        self._pipeline_field = pipeline_field
        self._tolerance = tolerance

    def authenticate(self, request: InboundRequest) -> Authentication:
        """Flow callouts: HMAC header then org ID. Outbound Messages: URL token, then org ID."""
        if request.media_type == "application/json":
            auth = verify_closedloop_signature(
                request.header(SIGNATURE_HEADER),
                self._flow_secret,
                request.body,
                request.received_at,
                self._tolerance,
            )
            try:
                org = parse_json_object(request.body).get("OrganizationId")
            except PayloadError:
                return auth  # authenticated by the HMAC; parse() reports the body
            if org is not None:
                self._check_org(str(org))
            return auth
        if self._token is not None:
            verify_token(request.query.get("token"), self._token)
        try:
            notifications = _notifications(request.body)
        except PayloadError as exc:
            if self._token is not None:
                return Authentication()  # the token authenticated it; parse() reports the body
            raise AuthenticationError(f"cannot read the organization ID: {exc.problem}") from exc
        self._check_org(notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId") or "")
        return Authentication()

    def _check_org(self, org_id: str) -> None:
        if _org15(org_id) not in self._orgs:
            raise AuthenticationError("organization ID is not an accepted Salesforce org")

    def parse(self, request: InboundRequest) -> Delivery:
        """Every Opportunity notification of a SOAP message, or the one of a Flow callout."""
        if request.media_type == "application/json":
            return self._parse_flow(parse_json_object(request.body))
        notifications = _notifications(request.body)
        org = required_text(
            notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId"), "OrganizationId"
        )
        changes: list[DealChange] = []
        rejections: list[Rejection] = []
        ignored = 0
        for index, notification in enumerate(
            notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
        ):
            notification_id = notification.findtext(f"{{{OUTBOUND_NS}}}Id")
            try:
                sobject = notification.find(f"{{{OUTBOUND_NS}}}sObject")
                if sobject is None:
                    raise PayloadError("Notification.sObject", "is missing", "missing_field")
                if not sobject.get(f"{{{XSI_NS}}}type", "").endswith("Opportunity"):
                    ignored += 1
                    continue
                event = required_text(notification_id, "Notification.Id")
                changes.append(
                    self._change(index, f"salesforce:{_org15(org)}:{event}", _fields(sobject))
                )
            except PayloadError as exc:
                field = f"Notification[{index}].{exc.field}" if exc.field else None
                rejections.append(Rejection(field, exc.problem, exc.reason, index, notification_id))
        if not changes and not rejections and not ignored:
            raise PayloadError(
                "Notification", "the message holds no notifications", "missing_field"
            )
        return Delivery(tuple(changes), tuple(rejections), ignored, delivery_id=org)

    def _parse_flow(self, body: Mapping[str, Any]) -> Delivery:
        opportunity = body.get("Opportunity")
        if not isinstance(opportunity, dict):
            raise PayloadError(
                "Opportunity", "must be an object of Opportunity fields", "missing_field"
            )
        org = required_text(body.get("OrganizationId"), "OrganizationId")
        deal_id = required_text(opportunity.get("Id"), "Opportunity.Id")
        event = text(body.get("EventId"), "EventId", required=False)
        if event is None:
            modified = timestamp(
                opportunity.get("LastModifiedDate"), "Opportunity.LastModifiedDate"
            )
            event = (
                f"flow:{deal_id}:{opportunity.get('StageName', '')}:"
                f"{int(modified.timestamp() * 1000)}"
            )
        try:
            change = self._change(0, f"salesforce:{_org15(org)}:{event}", opportunity)
        except PayloadError as exc:
            exc.field = f"Opportunity.{exc.field}" if exc.field else None
            exc.delivery_id = event
            raise
        return Delivery((change,), delivery_id=event)

    def _change(self, index: int, event_id: str, fields: Mapping[str, Any]) -> DealChange:
        is_closed = flag(fields.get("IsClosed"), "IsClosed")
        is_won = flag(fields.get("IsWon"), "IsWon")
        return DealChange(
            index=index,
            event_id=event_id,
            deal_id=required_text(fields.get("Id"), "Id"),
            occurred_at=timestamp(
                fields.get("LastModifiedDate") or fields.get("SystemModstamp"), "LastModifiedDate"
            ),
            crm_stage=required_text(fields.get("StageName"), "StageName"),
            pipeline=text(fields.get(self._pipeline_field), self._pipeline_field, required=False),
            email=text(fields.get(self._email_field), self._email_field, required=False),
            amount=amount(fields.get("Amount"), "Amount"),
            currency=currency(fields.get("CurrencyIsoCode"), "CurrencyIsoCode"),
            is_won=bool(is_closed and is_won) if is_closed is not None else None,
            is_lost=bool(is_closed and not is_won) if is_closed is not None else None,
            deal_name=text(fields.get("Name"), "Name", required=False),
        )

    def success_body(self, request: InboundRequest) -> tuple[bytes, str] | None:
        """The SOAP acknowledgement Outbound Messages expect; JSON for Flow callouts."""
        if request.media_type in SOAP_MEDIA_TYPES:
            return ACK, "text/xml; charset=utf-8"
        return None

    def storable_body(self, body: bytes) -> bytes:
        """The body with the API session ID blanked."""
        return redact_session_id(body)


def _notifications(body: bytes) -> Element:
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise PayloadError(
            None, f"the body is not well-formed, safe XML: {exc}", "malformed_body"
        ) from exc
    notifications: Element | None = root.find(f".//{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise PayloadError(
            "notifications", "no Outbound Message notifications element", "malformed_body"
        )
    return notifications


def _fields(sobject: Element) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for child in sobject:
        name = child.tag.rsplit("}", 1)[-1]
        nil = child.get(f"{{{XSI_NS}}}nil") == "true"
        fields[name] = None if nil else (child.text or "").strip()
    return fields
