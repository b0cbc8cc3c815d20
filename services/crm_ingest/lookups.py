"""CRM API lookups of a deal's contact e-mail (HubSpot, Pipedrive), with a cache of e-mails."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from services.common.errors import UnavailableError
from services.crm_ingest.crms.base import amount, currency
from services.crm_ingest.deals import DealDetails
from services.crm_ingest.errors import PayloadError

log = logging.getLogger(__name__)

HUBSPOT_DEAL_PROPERTIES = "dealname,dealstage,pipeline,amount,deal_currency_code"


class DealLookup(Protocol):
    """Fills what a webhook lacks from the CRM's API."""

    async def details(self, lookup_id: str) -> DealDetails:
        """Deal details; PayloadError when the CRM has no such record, UnavailableError when
        the CRM cannot answer now."""
        ...

    async def aclose(self) -> None:
        """Close the HTTP client."""
        ...


class TtlCache:
    """A small in-memory cache with a time to live and a size bound (oldest dropped first)."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[str, tuple[float, str | None]] = {}

    def get(self, key: str) -> tuple[bool, str | None]:
        """(found, value)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return False, None
        return True, entry[1]

    def put(self, key: str, value: str | None) -> None:
        """Remember ``value`` for the time to live."""
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (time.monotonic() + self._ttl, value)


class _ApiClient:
    def __init__(self, crm: str, base_url: str, headers: dict[str, str], timeout: float) -> None:
        self._crm = crm
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout
        )

    async def get_json(self, path: str, params: dict[str, str], field: str) -> dict[str, Any]:
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"{self._crm} API unreachable: {type(exc).__name__}") from exc
        if response.status_code == 404:
            raise PayloadError(field, f"{self._crm} has no record {path}", "unknown_record")
        if response.status_code in {401, 403}:
            log.error("CRM API refused the token", extra={"crm": self._crm})
            raise UnavailableError(f"{self._crm} API refused the token", retry_after_seconds=60)
        if response.status_code == 429 or response.status_code >= 500:
            raise UnavailableError(f"{self._crm} API answered {response.status_code}")
        if response.status_code != 200:
            raise UnavailableError(f"{self._crm} API answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise UnavailableError(f"{self._crm} API answered non-JSON") from exc
        if not isinstance(body, dict):
            raise UnavailableError(f"{self._crm} API answered an unexpected shape")
        return body

    async def aclose(self) -> None:
        await self._client.aclose()


class HubSpotLookup:
    """GET /crm/v3/objects/deals/{id} with its contact associations, then the contact's e-mail."""

    def __init__(self, base_url: str, token: str, timeout: float, cache_seconds: float) -> None:
        self._api = _ApiClient("hubspot", base_url, {"Authorization": f"Bearer {token}"}, timeout)
        self._emails = TtlCache(cache_seconds)

    async def details(self, lookup_id: str) -> DealDetails:
        """The deal's properties and its first associated contact's e-mail."""
        deal = await self._api.get_json(
            f"/crm/v3/objects/deals/{quote(lookup_id, safe='')}",
            {"properties": HUBSPOT_DEAL_PROPERTIES, "associations": "contacts"},
            "objectId",
        )
        props = deal.get("properties") if isinstance(deal.get("properties"), dict) else {}
        assert isinstance(props, dict)
        contacts = ((deal.get("associations") or {}).get("contacts") or {}).get("results") or []
        email = None
        if contacts and isinstance(contacts[0], dict) and contacts[0].get("id") is not None:
            email = await self._contact_email(str(contacts[0]["id"]))
        return DealDetails(
            email=email,
            crm_stage=_str(props.get("dealstage")),
            pipeline=_str(props.get("pipeline")),
            amount=_amount(props.get("amount"), "amount"),
            currency=_currency(props.get("deal_currency_code")),
            deal_name=_str(props.get("dealname")),
        )

    async def _contact_email(self, contact_id: str) -> str | None:
        found, email = self._emails.get(contact_id)
        if found:
            return email
        contact = await self._api.get_json(
            f"/crm/v3/objects/contacts/{quote(contact_id, safe='')}",
            {"properties": "email"},
            "contact",
        )
        props = contact.get("properties")
        email = _str(props.get("email")) if isinstance(props, dict) else None
        self._emails.put(contact_id, email)
        return email

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._api.aclose()


class PipedriveLookup:
    """GET /api/v1/persons/{id}: the person's primary e-mail."""

    def __init__(self, base_url: str, token: str, timeout: float, cache_seconds: float) -> None:
        self._api = _ApiClient("pipedrive", base_url, {"x-api-token": token}, timeout)
        self._emails = TtlCache(cache_seconds)

    async def details(self, lookup_id: str) -> DealDetails:
        """The e-mail of the deal's person (primary first, else the first one)."""
        found, email = self._emails.get(lookup_id)
        if not found:
            body = await self._api.get_json(
                f"/api/v1/persons/{quote(lookup_id, safe='')}", {}, "data.person_id"
            )
            data = body.get("data") if isinstance(body.get("data"), dict) else {}
            assert isinstance(data, dict)
            email = _primary_email(data.get("emails") or data.get("email"))
            self._emails.put(lookup_id, email)
        return DealDetails(email=email)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._api.aclose()


def _primary_email(entries: Any) -> str | None:
    if isinstance(entries, str):
        return entries or None
    if not isinstance(entries, list):
        return None
    values = [e for e in entries if isinstance(e, dict) and e.get("value")]
    primary = [e for e in values if e.get("primary") is True or e.get("primary") == "true"]
    chosen = primary or values
    return str(chosen[0]["value"]) if chosen else None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _amount(value: Any, field: str) -> Decimal | None:
    try:
        return amount(value, field)
    except PayloadError:
        return None


def _currency(value: Any) -> str | None:
    try:
        return currency(value, "deal_currency_code")
    except PayloadError:
        return None
