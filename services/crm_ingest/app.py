"""The crm_ingest HTTP app: receivers per CRM, dedupe, acknowledged publishing (composition root)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from schemas.topics import CRM_DEAL_STAGES, CRM_INVALID
from services.common.avro import AvroCodec
from services.common.errors import AuthenticationError, CodecError, UnavailableError
from services.common.kafka import KafkaPublisher, Key
from services.crm_ingest import api
from services.crm_ingest.crms.base import (
    CrmAdapter,
    DealChange,
    InboundRequest,
    Rejection,
)
from services.crm_ingest.crms.generic import GenericAdapter
from services.crm_ingest.crms.hubspot import HubSpotAdapter
from services.crm_ingest.crms.pipedrive import PipedriveAdapter
from services.crm_ingest.crms.salesforce import SalesforceAdapter
from services.crm_ingest.deals import complete, deal_stage_changed
from services.crm_ingest.dedupe import DedupeStore
from services.crm_ingest.errors import (
    BodyTooLargeError,
    PayloadError,
    UnsupportedMediaTypeError,
)
from services.crm_ingest.lookups import DealLookup, HubSpotLookup, PipedriveLookup
from services.crm_ingest.settings import CrmIngestSettings
from services.crm_ingest.stages import StageMap

log = logging.getLogger("services.crm_ingest")

# The setting that enables each CRM's e-mail lookup, named in 400 answers.
LOOKUP_TOKENS = {
    "hubspot": "CRM_INGEST_HUBSPOT_ACCESS_TOKEN",
    "pipedrive": "CRM_INGEST_PIPEDRIVE_API_TOKEN",
}


class Publisher(Protocol):
    """What the app needs of services.common.kafka.KafkaPublisher."""

    async def publish_many(
        self, messages: Sequence[tuple[str, Key, bytes]]
    ) -> list[Exception | None]: ...

    def close(self, timeout: float = 10.0) -> int: ...


class KeyedLocks:
    """One asyncio lock per key, so concurrent deliveries of one event publish it once."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of ``keys`` (taken in sorted order, so no deadlock)."""
        ordered = sorted(set(keys))
        for key in ordered:
            self._holders[key] = self._holders.get(key, 0) + 1
            self._locks.setdefault(key, asyncio.Lock())
        acquired: list[str] = []
        try:
            for key in ordered:
                await self._locks[key].acquire()
                acquired.append(key)
            yield
        finally:
            for key in acquired:
                self._locks[key].release()
            for key in ordered:
                self._holders[key] -= 1
                if self._holders[key] == 0:
                    del self._holders[key]
                    del self._locks[key]


def build_adapters(settings: CrmIngestSettings) -> dict[str, CrmAdapter]:
    """One adapter per CRM, keyed by the path segment it answers on."""
    tolerance = timedelta(seconds=settings.signature_tolerance_seconds)
    adapters: list[CrmAdapter] = [
        HubSpotAdapter(
            settings.hubspot_client_secret.get_secret_value(),
            frozenset(v.strip().lower() for v in settings.hubspot_signature_versions),
            tolerance,
            settings.public_url,
        ),
        SalesforceAdapter(
            settings.salesforce_organization_ids,
            settings.salesforce_outbound_token.get_secret_value()
            if settings.salesforce_outbound_token
            else None,
            settings.salesforce_flow_secret.get_secret_value(),
            settings.salesforce_email_field,
            settings.salesforce_pipeline_field,
            tolerance,
        ),
        PipedriveAdapter(
            settings.pipedrive_username, settings.pipedrive_password.get_secret_value()
        ),
        GenericAdapter(settings.generic_secret.get_secret_value(), tolerance),
    ]
    return {adapter.crm: adapter for adapter in adapters}


def build_lookups(settings: CrmIngestSettings) -> dict[str, DealLookup]:
    """The CRM API lookups whose token is configured."""
    lookups: dict[str, DealLookup] = {}
    timeout, cache = settings.lookup_timeout_seconds, settings.lookup_cache_seconds
    if settings.hubspot_access_token is not None:
        lookups["hubspot"] = HubSpotLookup(
            settings.hubspot_api_url,
            settings.hubspot_access_token.get_secret_value(),
            timeout,
            cache,
        )
    if settings.pipedrive_api_token is not None:
        lookups["pipedrive"] = PipedriveLookup(
            settings.pipedrive_api_url,
            settings.pipedrive_api_token.get_secret_value(),
            timeout,
            cache,
        )
    return lookups


class Ingest:
    """Turns one authenticated delivery into acknowledged events, exactly once per event ID."""

    def __init__(
        self,
        settings: CrmIngestSettings,
        publisher: Publisher,
        store: DedupeStore,
        lookups: Mapping[str, DealLookup],
        stages: StageMap,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.store = store
        self.lookups = lookups
        self.stages = stages
        self.deal_topic = settings.kafka.topic(CRM_DEAL_STAGES.name)
        self.invalid_topic = settings.kafka.topic(CRM_INVALID.name)
        self.deal_codec = AvroCodec.for_topic(CRM_DEAL_STAGES.name)
        self.invalid_codec = AvroCodec.for_topic(CRM_INVALID.name)
        self.locks = KeyedLocks()

    async def receive(self, adapter: CrmAdapter, inbound: InboundRequest) -> Response:
        """Authenticate, refuse replays, then process; a 503 leaves the signature reusable."""
        auth = adapter.authenticate(inbound)
        claimed = None
        if auth.replay_key is not None and auth.replay_expires_at is not None:
            if not self.store.claim_signature(
                auth.replay_key, auth.replay_expires_at, inbound.received_at
            ):
                raise AuthenticationError("this signature was already used (replay)")
            claimed = auth.replay_key
        try:
            return await self._process(adapter, inbound)
        except UnavailableError:
            if claimed is not None:
                self.store.release_signature(claimed)
            raise

    async def _process(self, adapter: CrmAdapter, inbound: InboundRequest) -> Response:
        try:
            delivery = adapter.parse(inbound)
        except PayloadError as exc:
            rejection = Rejection.of(exc, None, exc.delivery_id)
            await self._publish(adapter, inbound, [], [rejection])
            return _error(400, rejection.reason, rejection.field, rejection.problem, [rejection])
        records: list[dict[str, Any]] = []
        rejections = list(delivery.rejections)
        for change in delivery.changes:
            try:
                records.append(await self._record(adapter.crm, change, inbound.received_at))
            except PayloadError as exc:
                rejections.append(
                    Rejection(
                        exc.field,
                        exc.problem,
                        exc.reason,
                        change.index,
                        change.event_id,
                        change.raw,
                    )
                )
        event_ids = list(dict.fromkeys(record["event_id"] for record in records))
        async with self.locks.hold(event_ids):
            seen = self.store.delivered(event_ids, inbound.received_at)
            fresh = list({r["event_id"]: r for r in records if r["event_id"] not in seen}.values())
            await self._publish(adapter, inbound, fresh, rejections)
        log.info(
            "webhook processed",
            extra={
                "crm": adapter.crm,
                "accepted": len(fresh),
                "duplicates": len(event_ids) - len(fresh),
                "ignored": delivery.ignored,
                "rejected": len(rejections),
            },
        )
        if not records and not delivery.ignored and rejections:
            first = rejections[0]
            return _error(400, first.reason, first.field, first.problem, rejections)
        custom = adapter.success_body(inbound)
        if custom is not None:
            return Response(content=custom[0], media_type=custom[1])
        body = api.Accepted(
            accepted=len(fresh),
            duplicates=len(event_ids) - len(fresh),
            ignored=delivery.ignored,
            rejected=[api.RejectedItem(**r.as_json()) for r in rejections],
            event_ids=event_ids,
        )
        return JSONResponse(body.model_dump())

    async def _record(self, crm: str, change: DealChange, received_at: datetime) -> dict[str, Any]:
        lookup = self.lookups.get(crm)
        needs_lookup = not change.email or (
            not change.crm_stage and not change.is_won and not change.is_lost
        )
        if needs_lookup and lookup is not None and change.lookup_id:
            change = complete(change, await lookup.details(change.lookup_id))
        elif not change.email and change.lookup_id and crm in LOOKUP_TOKENS:
            raise PayloadError(
                "email",
                f"the payload has no contact e-mail; set {LOOKUP_TOKENS[crm]} to look it up",
                "missing_email",
            )
        record = deal_stage_changed(
            crm,
            change,
            self.stages,
            self.settings.identity,
            received_at,
            self.settings.default_currency,
        )
        try:
            self.deal_codec.encode(record)
        except CodecError as exc:
            raise PayloadError(None, exc.problem, "unencodable") from exc
        return record

    async def _publish(
        self,
        adapter: CrmAdapter,
        inbound: InboundRequest,
        records: list[dict[str, Any]],
        rejections: list[Rejection],
    ) -> None:
        """Publish and wait for every ack; record acked event IDs; UnavailableError otherwise."""
        messages: list[tuple[str, Key, bytes]] = [
            (self.deal_topic, record["lead_id"], self.deal_codec.encode(record))
            for record in records
        ]
        stored = adapter.storable_body(inbound.body)
        for rejection in rejections:
            messages.append(
                (
                    self.invalid_topic,
                    None,
                    self.invalid_codec.encode(
                        {
                            "received_at": inbound.received_at,
                            "crm": adapter.crm,
                            "reason": rejection.reason,
                            "field": rejection.field,
                            "message": rejection.problem,
                            "content_type": inbound.media_type,
                            "delivery_id": rejection.delivery_id,
                            "raw": rejection.raw if rejection.raw is not None else stored,
                        }
                    ),
                )
            )
        if not messages:
            return
        results = await self.publisher.publish_many(messages)
        acked = [r["event_id"] for r, error in zip(records, results, strict=False) if error is None]
        self.store.record_delivered(acked, inbound.received_at)
        failures = [error for error in results if error is not None]
        if failures:
            log.warning(
                "broker did not acknowledge",
                extra={"crm": adapter.crm, "failed": len(failures), "error": str(failures[0])},
            )
            raise UnavailableError(f"broker did not acknowledge {len(failures)} message(s)")


def _error(
    status: int,
    reason: str,
    field: str | None,
    problem: str,
    rejections: Sequence[Rejection] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = api.ErrorBody(
        error=api.ErrorDetail(status=status, reason=reason, field=field, problem=problem),
        rejected=[api.RejectedItem(**r.as_json()) for r in rejections],
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with BodyTooLargeError as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"body of {declared} bytes is larger than {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    settings: CrmIngestSettings,
    publisher: Publisher | None = None,
    *,
    lookups: Mapping[str, DealLookup] | None = None,
    store: DedupeStore | None = None,
) -> FastAPI:
    """The app with real adapters unless a publisher, lookups or store are passed in."""
    stages = StageMap.build(settings.stage_map, settings.custom_stages, settings.stage_map_file)
    owns_publisher = publisher is None
    if publisher is None:
        publisher = KafkaPublisher(settings.kafka, "closedloop-crm-ingest")
    if store is None:
        store = DedupeStore(settings.dedupe_path, timedelta(hours=settings.dedupe_window_hours))
    resolved_lookups = build_lookups(settings) if lookups is None else dict(lookups)
    ingest = Ingest(settings, publisher, store, resolved_lookups, stages)
    adapters = build_adapters(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for lookup in resolved_lookups.values():
            await lookup.aclose()
        if owns_publisher:
            remaining = ingest.publisher.close(10.0)
            if remaining:
                log.error("messages left undelivered at shutdown", extra={"count": remaining})
        ingest.store.close()

    app = FastAPI(
        title="closedloop crm_ingest",
        version="0.1.0",
        description="Authenticated deal-stage webhooks from HubSpot, Salesforce, Pipedrive and "
        "any CRM, published to crm.deal_stages after the broker's acknowledgement.",
        lifespan=lifespan,
    )
    app.state.ingest = ingest

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(request: Request, exc: AuthenticationError) -> JSONResponse:
        log.info("webhook refused", extra={"path": request.url.path, "problem": str(exc)})
        headers = (
            {"WWW-Authenticate": 'Basic realm="closedloop"'}
            if request.url.path.endswith("/pipedrive")
            else None
        )
        return _error(401, "unauthenticated", None, str(exc), headers=headers)

    @app.exception_handler(UnavailableError)
    async def unavailable(_request: Request, exc: UnavailableError) -> JSONResponse:
        return _error(
            503,
            "unavailable",
            None,
            str(exc),
            headers={"Retry-After": str(exc.retry_after_seconds)},
        )

    @app.exception_handler(BodyTooLargeError)
    async def too_large(_request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return _error(413, "body_too_large", None, str(exc))

    @app.exception_handler(UnsupportedMediaTypeError)
    async def unsupported(_request: Request, exc: UnsupportedMediaTypeError) -> JSONResponse:
        return _error(415, "unsupported_media_type", "Content-Type", str(exc))

    async def receive(request: Request, crm: str) -> Response:
        adapter = adapters[crm]
        received_at = datetime.now(UTC)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in adapter.media_types:
            raise UnsupportedMediaTypeError(
                f"{crm} webhooks are {' or '.join(sorted(adapter.media_types))}, "
                f"not {media_type or 'missing'}"
            )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in {"", "identity"}:
            raise UnsupportedMediaTypeError(f"Content-Encoding {encoding} is not accepted")
        body = await read_body(request, settings.max_body_bytes)
        inbound = InboundRequest(
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params),
            media_type=media_type,
            body=body,
            received_at=received_at,
        )
        return await ingest.receive(adapter, inbound)

    common: dict[str, Any] = {
        "response_model": api.Accepted,
        "responses": api.ERROR_RESPONSES,
        "tags": ["webhooks"],
    }

    @app.post(
        "/v1/webhooks/hubspot",
        summary="HubSpot webhook subscriptions and workflow webhooks",
        openapi_extra={
            **api.request_body({"application/json": api.HUBSPOT_BODY}),
            "parameters": [
                api.header("X-HubSpot-Signature-v3", "base64 HMAC-SHA256 (v3)"),
                api.header("X-HubSpot-Request-Timestamp", "epoch milliseconds (v3)"),
                api.header("X-HubSpot-Signature", "hex SHA-256 (v1/v2)"),
                api.header("X-HubSpot-Signature-Version", "v1 or v2"),
            ],
        },
        **common,
    )
    async def hubspot(request: Request) -> Response:
        """A batch of deal events or one workflow webhook, signed by the HubSpot app."""
        return await receive(request, "hubspot")

    @app.post(
        "/v1/webhooks/salesforce",
        summary="Salesforce Outbound Messages (SOAP) and Flow JSON callouts",
        openapi_extra={
            **api.request_body(
                {
                    "text/xml": {"type": "string", "description": "Outbound Message envelope"},
                    "application/json": api.SALESFORCE_FLOW_BODY,
                }
            ),
            "parameters": [
                api.header("X-Closedloop-Signature", "t=<unix>,v1=<hex> (Flow callouts)"),
                {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Outbound Message URL token, when configured",
                },
            ],
        },
        **{
            **common,
            "responses": {
                **api.ERROR_RESPONSES,
                200: {
                    "description": "Outbound Messages: the SOAP acknowledgement; Flow "
                    "callouts: the JSON body of every receiver.",
                    "content": {"text/xml": {"schema": {"type": "string"}}},
                },
            },
        },
    )
    async def salesforce(request: Request) -> Response:
        """Opportunity notifications; answers the SOAP acknowledgement to Outbound Messages."""
        return await receive(request, "salesforce")

    @app.post(
        "/v1/webhooks/pipedrive",
        summary="Pipedrive webhooks v2 (create.deal, change.deal)",
        openapi_extra={
            **api.request_body({"application/json": api.PIPEDRIVE_BODY}),
            "parameters": [api.header("Authorization", "HTTP basic auth set on the webhook")],
        },
        **common,
    )
    async def pipedrive(request: Request) -> Response:
        """A deal notification with HTTP basic auth."""
        return await receive(request, "pipedrive")

    @app.post(
        "/v1/webhooks/generic",
        summary="Any CRM: the documented JSON body, HMAC-signed",
        openapi_extra={
            **api.request_body({"application/json": api.GENERIC_BODY}),
            "parameters": [api.header("X-Closedloop-Signature", "t=<unix>,v1=<hex>")],
        },
        **common,
    )
    async def generic(request: Request) -> Response:
        """One deal change in the closedloop JSON shape."""
        return await receive(request, "generic")

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    return app
