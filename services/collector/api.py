"""The hot path as pure ASGI endpoints: POST /v1/events, GET /v1/p.gif, GET /v1/tracker.js."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from services.collector.encoding import RecordEncoder
from services.collector.enrich import EventRejected, RequestFacts, enrich
from services.collector.events import (
    CLICK_ID_NAMES,
    DECODE_ERRORS,
    Event,
    Problem,
    decode_batch,
    decode_event,
    is_batch_error,
    problem_from_error,
)
from services.collector.limits import TokenBucket, origin_allowed, retry_after_seconds
from services.collector.ports import EventSink, Message, Outcome
from services.collector.settings import CollectorSettings, WriteKey
from services.common.avro import AvroCodec
from services.common.errors import UnavailableError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

EVENTS_PATH = "/v1/events"
PIXEL_PATH = "/v1/p.gif"
TRACKER_PATH = "/v1/tracker.js"
JSON_TYPES = ("application/json", "text/plain")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_JSON = [(b"content-type", b"application/json")]
_ENCODE = msgspec.json.encode
_PIXEL_IGNORED = {"writeKey", "cb", "_"}


def _sample_record() -> dict[str, Any]:
    """A record with every optional field set, for the fast encoder's self-check."""
    event = msgspec.convert(
        {
            "type": "conversion",
            "anonymous_id": "a",
            "event_id": "e",
            "timestamp": 1_700_000_000_000,
            "sent_at": 1_700_000_000_000,
            "session_id": "s",
            "url": "https://e.com/?utm_source=s&gclid=g",
            "title": "t",
            "referrer": "r",
            "utm_medium": "m",
            "utm_campaign": "c",
            "utm_term": "k",
            "utm_content": "x",
            "email": "a@b.c",
            "traits": {"n": "é"},
            "event_name": "buy",
            "properties": {"p": 1},
            "value": "-1234.5",
            "currency": "EUR",
        },
        Event,
    )
    facts = RequestFacts(
        site_id="site", received_at_ms=1_700_000_000_000, ip="203.0.113.9", user_agent="Mozilla/5.0"
    )
    return enrich(event, facts)


class ClientGone(Exception):
    """The client disconnected while its body was being read."""


class Metrics:
    """The counters the endpoints update (prometheus in the app; no-op by default)."""

    def accepted(self, site_id: str, count: int) -> None:
        """Events made durable (acknowledged or spooled)."""

    def rejected(self, reason: str, count: int = 1) -> None:
        """Events or requests not accepted, by reason."""


@dataclass
class Pipeline:
    """Everything the endpoints share: settings, codecs, the sink, buckets and metrics."""

    settings: CollectorSettings
    sink: EventSink
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    raw_topic: str = ""
    invalid_topic: str = ""
    raw_codec: AvroCodec = field(default_factory=lambda: AvroCodec.for_topic("events.raw"))
    invalid_codec: AvroCodec = field(default_factory=lambda: AvroCodec.for_topic("events.invalid"))
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    all_origins: tuple[str, ...] = ()
    raw_encoder: RecordEncoder = field(init=False)

    def __post_init__(self) -> None:
        self.raw_encoder = RecordEncoder(self.raw_codec, _sample_record())
        self.raw_topic = self.settings.kafka.topic("events.raw")
        self.invalid_topic = self.settings.kafka.topic("events.invalid")
        self.all_origins = tuple(
            origin for key in self.settings.write_keys.values() for origin in key.allowed_origins
        )

    def encode_raw(self, record: dict[str, Any]) -> bytes:
        """The events.raw value of an enriched record."""
        return self.raw_encoder.encode(record)

    def rate_wait(self, write_key: str, key: WriteKey, cost: int) -> float:
        """Seconds to wait before this key may send ``cost`` more events (0 when allowed)."""
        now = time.monotonic()
        bucket = self.buckets.get(write_key)
        if bucket is None:
            bucket = self.buckets[write_key] = TokenBucket.full(key.rate_limit_per_second, now)
        return bucket.take(cost, now)

    def rejected_message(
        self,
        problem: Problem,
        raw: bytes,
        endpoint: str,
        *,
        site_id: str | None,
        content_type: str | None,
        anonymous_id: str | None = None,
        index: int | None = None,
    ) -> Message:
        """The events.invalid message of one rejected event or request."""
        value = self.invalid_codec.encode(
            {
                "rejected_at": int(self.clock() * 1000),
                "endpoint": endpoint,
                "site_id": site_id,
                "anonymous_id": anonymous_id,
                "reason": problem.reason,
                "field": problem.field,
                "message": problem.message,
                "batch_index": index,
                "content_type": content_type,
                "raw": raw,
            }
        )
        return (self.invalid_topic, anonymous_id, value)


@dataclass(slots=True)
class RequestHeaders:
    """The few headers the hot path reads, picked in one pass."""

    content_type: str | None = None
    content_length: int | None = None
    write_key: str | None = None
    authorization: str | None = None
    origin: str | None = None
    user_agent: str | None = None
    forwarded_for: str | None = None
    referer: str | None = None
    if_none_match: str | None = None

    @classmethod
    def of(cls, scope: Scope) -> RequestHeaders:
        found = cls()
        for name, value in scope["headers"]:
            if name == b"content-type":
                found.content_type = value.decode("latin-1")
            elif name == b"content-length":
                found.content_length = int(value) if value.isdigit() else None
            elif name == b"x-write-key":
                found.write_key = value.decode("latin-1")
            elif name == b"authorization":
                found.authorization = value.decode("latin-1")
            elif name == b"origin":
                found.origin = value.decode("latin-1")
            elif name == b"user-agent":
                found.user_agent = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                found.forwarded_for = value.decode("latin-1")
            elif name == b"referer":
                found.referer = value.decode("latin-1")
            elif name == b"if-none-match":
                found.if_none_match = value.decode("latin-1")
        return found

    def basic_user(self) -> str | None:
        """The user name of HTTP basic auth ('' when malformed, None when absent)."""
        if not self.authorization or self.authorization[:6].lower() != "basic ":
            return None
        try:
            decoded = base64.b64decode(self.authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[0]

    def client_ip(self, scope: Scope, trust_forwarded_for: bool) -> str | None:
        if trust_forwarded_for and self.forwarded_for:
            return self.forwarded_for.split(",")[0].strip()
        client = scope.get("client")
        return str(client[0]) if client else None


class HttpError(Exception):
    """A request answered with an error status and a JSON body naming field and problem."""

    def __init__(
        self,
        status: int,
        problem: Problem,
        *,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(problem.message)
        self.status = status
        self.problem = problem
        self.retry_after = retry_after
        self.extra = extra or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {
            "status": self.status,
            "reason": self.problem.reason,
            "field": self.problem.field,
            "problem": self.problem.message,
            **self.extra,
        }
        return _ENCODE({"error": error})


async def send_response(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = _JSON
) -> None:
    """One complete HTTP response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it grows past ``limit`` bytes (the rest is unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _cors_headers(origin: str | None, patterns: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    if origin is None or not origin_allowed(origin, patterns):
        return []
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


class EventsEndpoint:
    """POST /v1/events: one event or a batch, acknowledged by the broker (200) or spooled (202)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.settings = pipeline.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = RequestHeaders.of(scope)
        cors = _cors_headers(headers.origin, self.pipeline.all_origins)
        method = scope["method"]
        if method == "OPTIONS":
            await self._preflight(send, cors)
            return
        try:
            if method != "POST":
                raise HttpError(405, Problem("method_not_allowed", None, "use POST"))
            status, body = await self._handle(scope, receive, headers)
        except HttpError as error:
            extra = list(cors)
            if error.retry_after is not None:
                extra.append((b"retry-after", str(error.retry_after).encode()))
            if error.status == 405:
                extra.append((b"allow", b"POST, OPTIONS"))
            self.pipeline.metrics.rejected(error.problem.reason)
            await send_response(send, error.status, error.body(), [*_JSON, *extra])
            return
        except ClientGone:
            return
        await send_response(send, status, body, [*_JSON, *cors])

    async def _preflight(self, send: Send, cors: list[tuple[bytes, bytes]]) -> None:
        headers = [
            *cors,
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", b"Content-Type, X-Write-Key, Authorization"),
            (b"access-control-max-age", b"86400"),
        ]
        await send_response(send, 204, b"", headers)

    def _key(self, candidate: str | None, where: str) -> tuple[str, WriteKey]:
        if not candidate:
            raise HttpError(
                401,
                Problem(
                    "unauthorized",
                    "X-Write-Key",
                    "missing write key (X-Write-Key header, basic auth user, or writeKey)",
                ),
            )
        key = self.settings.write_keys.get(candidate)
        if key is None:
            raise HttpError(401, Problem("unauthorized", where, "unknown write key"))
        return candidate, key

    async def _handle(
        self, scope: Scope, receive: Receive, headers: RequestHeaders
    ) -> tuple[int, bytes]:
        settings = self.settings
        pipeline = self.pipeline
        header_key = headers.write_key
        where = "X-Write-Key"
        if header_key is None:
            header_key = headers.basic_user()
            where = "Authorization"
        known: tuple[str, WriteKey] | None = None
        if header_key is not None:
            known = self._key(header_key, where)
        media = (headers.content_type or "").split(";", 1)[0].strip().lower()
        if media not in JSON_TYPES:
            problem = Problem(
                "unsupported_media_type",
                "Content-Type",
                f"expected application/json or text/plain, got {media or 'nothing'}",
            )
            await self._copy_invalid(problem, b"", known, headers)
            raise HttpError(415, problem)
        limit = settings.max_batch_bytes
        body = None
        if headers.content_length is None or headers.content_length <= limit:
            body = await read_body(receive, limit)
        if body is None:
            too_large = Problem(
                "too_large", "body", f"request body larger than {limit} bytes (the batch limit)"
            )
            await self._copy_invalid(too_large, b"", known, headers)
            raise HttpError(413, too_large)

        members: list[tuple[bytes, Event | Problem]]
        batch_sent_at = None
        body_key: str | None = None
        try:
            event = decode_event(body)
            members = [(body, event)]
            body_key = event.writeKey
            is_batch = False
        except DECODE_ERRORS as exc:
            if not is_batch_error(exc):
                problem = problem_from_error(exc)
                await self._copy_invalid(problem, body, known, headers)
                raise HttpError(400, problem) from None
            try:
                batch = decode_batch(body)
            except DECODE_ERRORS as batch_exc:
                problem = problem_from_error(batch_exc)
                await self._copy_invalid(problem, body, known, headers)
                raise HttpError(400, problem) from None
            is_batch = True
            body_key = batch.writeKey
            batch_sent_at = batch.sent_at
            if not batch.batch:
                problem = Problem("invalid_field", "batch", "batch is empty")
                await self._copy_invalid(problem, body, known, headers)
                raise HttpError(400, problem) from None
            if len(batch.batch) > settings.max_batch_events:
                problem = Problem(
                    "too_large", "batch", f"more than {settings.max_batch_events} events"
                )
                await self._copy_invalid(problem, b"", known, headers)
                raise HttpError(413, problem) from None
            members = [
                (bytes(raw), self._decode_member(bytes(raw), i))
                for i, raw in enumerate(batch.batch)
            ]
        if not is_batch and len(body) > settings.max_event_bytes:
            problem = Problem(
                "too_large", "body", f"event larger than {settings.max_event_bytes} bytes"
            )
            await self._copy_invalid(problem, b"", known, headers)
            raise HttpError(413, problem)
        if known is None:
            known = self._key(body_key, "writeKey")
        write_key, key = known
        if headers.origin is not None and not origin_allowed(headers.origin, key.allowed_origins):
            raise HttpError(
                403,
                Problem("origin_not_allowed", "Origin", "origin not allowed for this write key"),
            )
        wait = pipeline.rate_wait(write_key, key, len(members))
        if wait:
            raise HttpError(
                429,
                Problem("rate_limited", None, f"over {key.rate_limit_per_second:g} events/s"),
                retry_after=retry_after_seconds(wait),
            )

        facts = RequestFacts(
            site_id=key.site_id,
            received_at_ms=int(pipeline.clock() * 1000),
            ip=headers.client_ip(scope, settings.trust_forwarded_for),
            user_agent=headers.user_agent,
            batch_sent_at=batch_sent_at,
        )
        messages: list[Message] = []
        event_ids: list[str] = []
        rejected: list[dict[str, Any]] = []
        for index, (raw, member) in enumerate(members):
            anonymous_id = None
            if isinstance(member, Event):
                anonymous_id = member.anonymous_id
                try:
                    record = enrich(member, facts)
                except EventRejected as exc:
                    problem = exc.problem
                else:
                    event_ids.append(record["event_id"])
                    messages.append((pipeline.raw_topic, anonymous_id, pipeline.encode_raw(record)))
                    continue
            else:
                problem = member
            rejected.append({"index": index, "field": problem.field, "problem": problem.message})
            pipeline.metrics.rejected(problem.reason)
            messages.append(
                pipeline.rejected_message(
                    problem,
                    raw,
                    EVENTS_PATH,
                    site_id=key.site_id,
                    content_type=headers.content_type,
                    anonymous_id=anonymous_id,
                    index=index if is_batch else None,
                )
            )
        if not event_ids:
            await self._deliver_invalid(messages)
            if not is_batch:
                first = rejected[0]
                raise HttpError(400, Problem("invalid_field", first["field"], first["problem"]))
            raise HttpError(
                400,
                Problem("invalid_batch", "batch", "no event of the batch was valid"),
                extra={"rejected": rejected},
            )
        try:
            outcome = await pipeline.sink.deliver(messages)
        except UnavailableError as exc:
            raise HttpError(
                503,
                Problem("unavailable", None, str(exc)),
                retry_after=exc.retry_after_seconds,
            ) from None
        pipeline.metrics.accepted(key.site_id, len(event_ids))
        status = 200 if outcome is Outcome.ACKNOWLEDGED else 202
        return status, _ENCODE(
            {"accepted": len(event_ids), "rejected": rejected, "event_ids": event_ids}
        )

    def _decode_member(self, raw: bytes, index: int) -> Event | Problem:
        if len(raw) > self.settings.max_event_bytes:
            return Problem(
                "too_large", None, f"event larger than {self.settings.max_event_bytes} bytes"
            )
        try:
            return decode_event(raw)
        except DECODE_ERRORS as exc:
            return problem_from_error(exc)

    async def _copy_invalid(
        self,
        problem: Problem,
        raw: bytes,
        known: tuple[str, WriteKey] | None,
        headers: RequestHeaders,
    ) -> None:
        """A copy of a bad request on events.invalid, once the write key is known to be good."""
        if known is None:
            return
        message = self.pipeline.rejected_message(
            problem,
            raw,
            EVENTS_PATH,
            site_id=known[1].site_id,
            content_type=headers.content_type,
        )
        await self._deliver_invalid([message])

    async def _deliver_invalid(self, messages: Sequence[Message]) -> None:
        try:
            await self.pipeline.sink.deliver(messages)
        except UnavailableError:
            log.exception("could not keep a copy of a rejected event")


class PixelEndpoint:
    """GET /v1/p.gif: always the 1x1 GIF; events it cannot accept go to events.invalid."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"image/gif"),
            (b"cache-control", b"no-store, max-age=0"),
        ]
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(
                send,
                405,
                HttpError(405, Problem("method_not_allowed", None, "use GET")).body(),
                [*_JSON, (b"allow", b"GET, HEAD")],
            )
            return
        status = 200
        try:
            await self._track(scope, RequestHeaders.of(scope))
        except UnavailableError as exc:
            status = 503
            headers.append((b"retry-after", str(exc.retry_after_seconds).encode()))
        await send_response(send, status, PIXEL, headers)

    async def _track(self, scope: Scope, headers: RequestHeaders) -> None:
        pipeline = self.pipeline
        settings = pipeline.settings
        query: bytes = scope.get("query_string", b"")
        params = parse_qsl(query.decode("latin-1"), keep_blank_values=False)
        fields: dict[str, Any] = {}
        click_ids: dict[str, str] = {}
        properties: dict[str, str] = {}
        for name, value in params:
            if name in CLICK_ID_NAMES:
                click_ids[name] = value
            elif name.startswith("properties."):
                properties[name.removeprefix("properties.")] = value
            elif name not in _PIXEL_IGNORED:
                fields[name] = value
        fields.setdefault("type", "pageview")
        if headers.referer and "url" not in fields:
            fields["url"] = headers.referer
        if click_ids:
            fields["click_ids"] = click_ids
        if properties:
            fields["properties"] = properties
        write_key = dict(params).get("writeKey") or headers.write_key
        key = settings.write_keys.get(write_key or "")
        site_id = key.site_id if key else None
        problem: Problem | None = None
        anonymous_id = (
            fields.get("anonymous_id") if isinstance(fields.get("anonymous_id"), str) else None
        )
        if key is None:
            problem = Problem("unauthorized", "writeKey", "missing or unknown write key")
        else:
            try:
                event = msgspec.convert(fields, Event, strict=False)
                record = enrich(
                    event,
                    RequestFacts(
                        site_id=key.site_id,
                        received_at_ms=int(pipeline.clock() * 1000),
                        ip=headers.client_ip(scope, settings.trust_forwarded_for),
                        user_agent=headers.user_agent,
                    ),
                )
            except DECODE_ERRORS as exc:
                problem = problem_from_error(exc)
            except EventRejected as exc:
                problem = exc.problem
        if problem is not None:
            pipeline.metrics.rejected(problem.reason)
            message = pipeline.rejected_message(
                problem,
                query,
                PIXEL_PATH,
                site_id=site_id,
                content_type=None,
                anonymous_id=anonymous_id,
            )
            try:
                await pipeline.sink.deliver([message])
            except UnavailableError:
                log.exception("could not keep a copy of a rejected pixel")
            return
        assert key is not None
        await pipeline.sink.deliver(
            [(pipeline.raw_topic, record["anonymous_id"], pipeline.encode_raw(record))]
        )
        pipeline.metrics.accepted(key.site_id, 1)


class TrackerEndpoint:
    """GET /v1/tracker.js: the browser tracker, cacheable, with an ETag."""

    def __init__(self, source: bytes, max_age_seconds: int) -> None:
        self.source = source
        self.etag = f'"{hashlib.sha256(source).hexdigest()[:20]}"'
        self.headers = [
            (b"content-type", b"application/javascript; charset=utf-8"),
            (b"cache-control", f"public, max-age={max_age_seconds}".encode()),
            (b"etag", self.etag.encode()),
            (b"access-control-allow-origin", b"*"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await send_response(
                send,
                405,
                HttpError(405, Problem("method_not_allowed", None, "use GET")).body(),
                [*_JSON, (b"allow", b"GET, HEAD")],
            )
            return
        if RequestHeaders.of(scope).if_none_match == self.etag:
            await send({"type": "http.response.start", "status": 304, "headers": self.headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_response(send, 200, self.source, self.headers)
