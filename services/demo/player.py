"""Plays a simulation into a running stack: beacons to the collector, signed webhooks to crm_ingest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import httpx

from services.common.errors import ClosedloopError
from services.demo.simulator import Beacon, Simulation, StageChange, iter_slices

# Canonical stage -> HubSpot's default Sales Pipeline stage ID (lead and mql pass through as is).
HUBSPOT_STAGES = {
    "sql": "appointmentscheduled",
    "opportunity": "qualifiedtobuy",
    "proposal": "presentationscheduled",
    "negotiation": "contractsent",
    "closed_won": "closedwon",
    "closed_lost": "closedlost",
}
# Canonical stage -> Salesforce's standard Opportunity StageName (mql passes through as is).
SALESFORCE_STAGES = {
    "lead": "Prospecting",
    "sql": "Qualification",
    "opportunity": "Needs Analysis",
    "proposal": "Proposal/Price Quote",
    "negotiation": "Negotiation/Review",
    "closed_won": "Closed Won",
    "closed_lost": "Closed Lost",
}
# Pipedrive webhooks carry no e-mail (crm_ingest looks it up in Pipedrive's API), so the demo
# plays the CRMs whose webhooks can name the contact themselves.
PLAYABLE_CRMS = ("generic", "hubspot", "salesforce")
_RETRYABLE = frozenset({429, 502, 503, 504})


class DeliveryError(ClosedloopError):
    """The stack refused or lost part of the simulation."""


@dataclass(frozen=True)
class Endpoints:
    """Where the stack listens and the credentials it expects."""

    collector_url: str = "http://127.0.0.1:8080"
    crm_ingest_url: str = "http://127.0.0.1:8081"
    write_key: str = "dev-write-key"  # noqa: S105 - the documented local default
    generic_secret: str = "dev-generic-secret"  # noqa: S105 - the documented local default
    hubspot_secret: str = "dev-hubspot-secret"  # noqa: S105 - the documented local default
    salesforce_secret: str = "dev-salesforce-secret"  # noqa: S105 - the documented local default
    salesforce_organization_id: str = "00D000000000062"
    salesforce_email_field: str = "Contact_Email__c"


@dataclass
class PlayStats:
    """What was sent and what the stack answered."""

    requests: int = 0
    beacons: int = 0
    webhooks: int = 0
    retries: int = 0
    spooled: int = 0  # 202: accepted into the collector's spool, not yet on the broker
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    aborted: bool = False  # a request failed for good: the rest was not sent

    @property
    def ok(self) -> bool:
        return not self.problems


def closedloop_signature(secret: str, body: bytes, now: int) -> str:
    """``X-Closedloop-Signature``: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    digest = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={now},v1={digest}"


def hubspot_signature_v3(secret: str, method: str, url: str, body: bytes, now_ms: int) -> str:
    """HubSpot's v3 signature: base64 HMAC-SHA256 of method + URI + body + timestamp (ms)."""
    message = method.encode() + url.encode() + body + str(now_ms).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def webhook_request(
    change: StageChange, endpoints: Endpoints, now: float
) -> tuple[str, bytes, dict[str, str]]:
    """(URL, body, headers) of one stage change in its CRM's webhook shape, signed."""
    at_ms = int(change.at.timestamp() * 1000)
    amount = None if change.amount is None else str(change.amount)
    if change.crm == "hubspot":
        url = f"{endpoints.crm_ingest_url}/v1/webhooks/hubspot"
        # A workflow "Send a webhook" action with flat deal properties.
        properties: dict[str, Any] = {
            "hs_object_id": change.deal_id,
            "dealstage": HUBSPOT_STAGES.get(change.stage, change.stage),
            "pipeline": change.pipeline,
            "dealname": change.deal_name,
            "email": change.email,
            "hs_lastmodifieddate": at_ms,
        }
        if amount is not None:
            properties["amount"] = amount
            properties["deal_currency_code"] = change.currency
        body = json.dumps(properties).encode()
        now_ms = int(now * 1000)
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": hubspot_signature_v3(
                endpoints.hubspot_secret, "POST", url, body, now_ms
            ),
            "X-HubSpot-Request-Timestamp": str(now_ms),
        }
        return url, body, headers
    if change.crm == "salesforce":
        # A record-triggered Flow's HTTP callout with the Opportunity's fields.
        closed = change.stage in ("closed_won", "closed_lost")
        opportunity: dict[str, Any] = {
            "Id": change.deal_id,
            "Name": change.deal_name,
            "StageName": SALESFORCE_STAGES.get(change.stage, change.stage),
            "LastModifiedDate": change.at.astimezone(UTC).isoformat(),
            "IsClosed": closed,
            "IsWon": change.stage == "closed_won",
            endpoints.salesforce_email_field: change.email,
        }
        if amount is not None:
            opportunity["Amount"] = amount
            opportunity["CurrencyIsoCode"] = change.currency
        body = json.dumps(
            {
                "OrganizationId": endpoints.salesforce_organization_id,
                "EventId": change.event_id,
                "Opportunity": opportunity,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Closedloop-Signature": closedloop_signature(
                endpoints.salesforce_secret, body, int(now)
            ),
        }
        return f"{endpoints.crm_ingest_url}/v1/webhooks/salesforce", body, headers
    payload: dict[str, Any] = {
        "event_id": change.event_id,
        "deal_id": change.deal_id,
        "email": change.email,
        "pipeline": change.pipeline,
        "stage": change.stage,
        "occurred_at": change.at.astimezone(UTC).isoformat(),
        "deal_name": change.deal_name,
    }
    if amount is not None:
        payload["amount"] = amount
        payload["currency"] = change.currency
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Closedloop-Signature": closedloop_signature(endpoints.generic_secret, body, int(now)),
    }
    return f"{endpoints.crm_ingest_url}/v1/webhooks/generic", body, headers


def beacon_batches(beacons: Sequence[Beacon], batch_size: int) -> list[list[Beacon]]:
    """Beacons grouped by User-Agent (one header per request) into batches of ``batch_size``."""
    by_agent: dict[str, list[Beacon]] = defaultdict(list)
    for beacon in beacons:
        by_agent[beacon.user_agent].append(beacon)
    batches: list[list[Beacon]] = []
    for group in by_agent.values():
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    return batches


class _RateLimit:
    """At most ``rate`` calls per second across threads (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self._interval
        if slot > now:
            time.sleep(slot - now)


class Player:
    """Posts a simulation over HTTP, slice by slice of simulated time, with retries."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        rate: float = 0.0,
        concurrency: int = 4,
        batch_size: int = 100,
        attempts: int = 8,
        client: httpx.Client | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self.attempts = attempts
        self._limit = _RateLimit(rate)
        self._client = client or httpx.Client(
            timeout=30.0, limits=httpx.Limits(max_connections=self.concurrency * 2)
        )
        self._lock = threading.Lock()
        self.stats = PlayStats()

    def close(self) -> None:
        self._client.close()

    def play(
        self,
        simulation: Simulation,
        progress: Callable[[int], None] | None = None,
        slice_width: timedelta = timedelta(days=1),
    ) -> PlayStats:
        """Send everything, one ``slice_width`` of simulated time after the other (beacons, then
        webhooks); ``progress(n)`` is called with the number of items each request carried."""
        started = time.monotonic()
        with ThreadPoolExecutor(self.concurrency) as pool:
            for beacons, changes in iter_slices(simulation, slice_width):
                if self.stats.aborted:
                    break
                # A slice's beacons go first, then its deal changes; slices go in time order.
                futures = [
                    pool.submit(self._send_beacons, batch, progress)
                    for batch in beacon_batches(beacons, self.batch_size)
                ]
                wait(futures)
                for future in futures:
                    future.result()
                futures = [pool.submit(self._send_change, c, progress) for c in changes]
                wait(futures)
                for future in futures:
                    future.result()
        self.stats.seconds = time.monotonic() - started
        return self.stats

    def _send_beacons(self, batch: list[Beacon], progress: Callable[[int], None] | None) -> None:
        body = json.dumps({"batch": [dict(b.event) for b in batch]}).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Write-Key": self.endpoints.write_key,
            "User-Agent": batch[0].user_agent,
        }
        response = self._post(f"{self.endpoints.collector_url}/v1/events", body, headers)
        with self._lock:
            self.stats.beacons += len(batch)
            if response is not None:
                answer = _json(response)
                rejected = answer.get("rejected") or []
                if response.status_code == 202:
                    self.stats.spooled += len(batch)
                for item in rejected[:3]:
                    self.stats.problems.append(f"collector rejected an event: {item}")
                accepted = answer.get("accepted")
                if isinstance(accepted, int) and accepted + len(rejected) != len(batch):
                    self.stats.problems.append(
                        f"collector accepted {accepted} of {len(batch)} events without saying why"
                    )
        if progress is not None:
            progress(len(batch))

    def _send_change(self, change: StageChange, progress: Callable[[int], None] | None) -> None:
        def build() -> tuple[str, bytes, dict[str, str]]:
            return webhook_request(change, self.endpoints, time.time())

        response = self._post_built(build)
        with self._lock:
            self.stats.webhooks += 1
            if response is not None:
                answer = _json(response)
                for item in (answer.get("rejected") or [])[:3]:
                    self.stats.problems.append(f"crm_ingest rejected {change.event_id}: {item}")
        if progress is not None:
            progress(1)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response | None:
        return self._post_built(lambda: (url, body, headers))

    def _post_built(
        self, build: Callable[[], tuple[str, bytes, dict[str, str]]]
    ) -> httpx.Response | None:
        """POST with retries on 429/5xx and connection errors; None (and a problem) on failure."""
        if self.stats.aborted:
            return None
        delay = 0.2
        problem = ""
        for attempt in range(self.attempts):
            self._limit.wait()
            url, body, headers = build()  # re-signed on each attempt: signatures carry a time
            try:
                response = self._client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                problem = f"{url}: {type(exc).__name__}: {exc}"
            else:
                with self._lock:
                    self.stats.requests += 1
                    self.stats.statuses[response.status_code] += 1
                if response.status_code < 300:
                    return response
                problem = f"{url} answered {response.status_code}: {response.text[:300]}"
                if response.status_code not in _RETRYABLE:
                    break
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    delay = max(delay, float(retry_after))
            if attempt + 1 < self.attempts:
                with self._lock:
                    self.stats.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        with self._lock:
            # Later items would fail the same way (and the truth would no longer match what
            # the stack holds), so stop instead of hammering it.
            self.stats.problems.append(problem)
            self.stats.aborted = True
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
