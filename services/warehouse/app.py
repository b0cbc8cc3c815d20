"""The ASGI app: ClickHouse's HTTP interface (queries, inserts, sessions, errors) over the chDB engine."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread

from services.warehouse.compression import (
    RESPONSE_ENCODINGS,
    BodyDecoder,
    StreamEncoder,
    body_decoder,
    encode,
)
from services.warehouse.engine import Engine, Lease, QueryOutcome
from services.warehouse.protocol import (
    HEAD_BYTES,
    READ_KEYWORDS,
    STREAMABLE_FORMATS,
    ClickHouseError,
    QueryParams,
    content_type,
    credentials,
    insert_head,
    leading_keyword,
    output_format,
    query_params,
    response_encoding,
)
from services.warehouse.settings import WarehouseSettings

log = logging.getLogger("services.warehouse")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_QUERY_BYTES = 256 * 1024 * 1024
APPEND_BYTES = 1024 * 1024
SERVER_NAME = "closedloop-warehouse"
_LIMITER = anyio.CapacityLimiter(64)


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(func, *args, limiter=_LIMITER)


class BodyReader:
    """The request body chunk by chunk, remembering whether it was read to the end."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.done = False

    async def read(self) -> bytes:
        """The next chunk (empty at the end)."""
        if self.done:
            return b""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.done = True
            raise ClickHouseError.of(210, "Client disconnected while sending the request")
        self.done = not message.get("more_body", False)
        return bytes(message.get("body", b""))

    async def drain(self) -> None:
        """Read and drop the rest, so the connection can serve the next request."""
        with contextlib.suppress(ClickHouseError):
            while not self.done:
                await self.read()


@dataclass(frozen=True)
class Streamed:
    """A query answer being fetched block by block; ``first`` are the pieces already fetched."""

    stream: Any
    first: list[bytes]
    format: str


@dataclass(frozen=True)
class User:
    """An authenticated user and whether it may write."""

    name: str
    readonly: bool


class WarehouseApp:
    """ASGI callable; ``on_start`` runs in a thread once the engine is open (migrations)."""

    def __init__(
        self,
        settings: WarehouseSettings,
        engine: Engine | None = None,
        on_start: Callable[[Engine], None] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings.data_dir)
        self._on_start = on_start
        self._reaper: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await _in_thread(self.engine.open)
                    if self._on_start is not None:
                        await _in_thread(self._on_start, self.engine)
                except Exception as exc:
                    log.exception("warehouse failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._reaper = asyncio.create_task(self._reap_sessions())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._reaper is not None:
                    self._reaper.cancel()
                await _in_thread(self.engine.close)
                log.info("warehouse engine closed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(2)
            await _in_thread(self.engine.expire_sessions)

    def authenticate(self, headers: dict[str, str], pairs: list[tuple[str, str]]) -> User:
        """The user the request's credentials name, or AUTHENTICATION_FAILED."""
        given = credentials(headers, dict(pairs))
        clickhouse = self.settings.clickhouse
        if not given.given and self.settings.anonymous_readonly:
            return User(clickhouse.readonly_username, True)
        users = (
            (clickhouse.username, clickhouse.password.get_secret_value(), False),
            (clickhouse.readonly_username, clickhouse.readonly_password.get_secret_value(), True),
        )
        for name, password, readonly in users:
            if given.user == name and hmac.compare_digest(
                given.password.encode(), password.encode()
            ):
                return User(name, readonly)
        raise ClickHouseError.of(
            516,
            f"{given.user}: Authentication failed: password is incorrect, "
            "or there is no user with such name",
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        pairs = parse_qsl(scope["query_string"].decode("utf-8", "replace"), keep_blank_values=True)
        reader = BodyReader(receive)
        if path in {"/ping", "/replicas_status"} or (
            path == "/" and method in {"GET", "HEAD"} and not any(k == "query" for k, _ in pairs)
        ):
            await reader.drain()
            await _respond(send, 200, [(b"content-type", b"text/html; charset=UTF-8")], b"Ok.\n")
            return
        query_id = dict(pairs).get("query_id") or headers.get("x-clickhouse-query-id")
        query_id = query_id or str(uuid.uuid4())
        base_headers = [
            (b"x-clickhouse-query-id", query_id.encode()),
            (b"x-clickhouse-server-display-name", SERVER_NAME.encode()),
            (b"x-clickhouse-timezone", self.engine.timezone.encode()),
        ]
        if path != "/":
            await reader.drain()
            missing = f"There is no handle {path}\n\nUse / or /ping for health checks.\n"
            await _respond(
                send, 404, [(b"content-type", b"text/plain; charset=UTF-8")], missing.encode()
            )
            return
        user: User | None = None
        try:
            params = query_params(pairs, headers)
            user = self.authenticate(headers, pairs)
            if params.native_compression:
                raise ClickHouseError.of(
                    48,
                    "compress=1/decompress=1 (ClickHouse native block compression) is not "
                    "supported by this server; use HTTP Content-Encoding (lz4, zstd, gzip)",
                )
            decoder = body_decoder(headers.get("content-encoding", ""))
            # A connection's readonly can never be lowered again, so a request that sets it
            # runs on a connection of its own, outside its session.
            session_id = None if "readonly" in params.settings else params.session_id
            # ClickHouse runs GET queries read-only; sessions keep their user's rights.
            readonly = user.readonly or (method == "GET" and session_id is None)
            lease: Lease = await _in_thread(
                self.engine.lease,
                user.name,
                readonly,
                session_id,
                params.session_timeout or self.settings.session_timeout_seconds,
                params.session_check,
            )
            try:
                await _in_thread(lease.prepare, params.database, params.settings)
                result = await self._execute(lease, params, reader, decoder)
                if isinstance(result, Streamed):
                    await self._send_stream(send, lease, result, params, headers, base_headers)
                    return
                outcome, fmt = result
            finally:
                await _in_thread(lease.release)
        except ClickHouseError as error:
            await reader.drain()
            if user is not None:
                # chDB runs every query as its own user "default"; name the HTTP user instead.
                error.message = error.message.replace(
                    "DB::Exception: default: ", f"DB::Exception: {user.name}: ", 1
                )
            log.info(
                "query failed",
                extra={"query_id": query_id, "code": error.code, "status": error.status},
            )
            await _respond(
                send,
                error.status,
                [
                    *base_headers,
                    (b"content-type", b"text/plain; charset=UTF-8"),
                    (b"x-clickhouse-exception-code", str(error.code).encode()),
                ],
                error.body(self.engine.version),
            )
            return
        body = outcome.body
        response_headers = [
            *base_headers,
            (b"content-type", content_type(fmt).encode()),
            (b"x-clickhouse-format", fmt.encode()),
            (b"x-clickhouse-summary", json.dumps(outcome.summary()).encode()),
        ]
        encoding = None
        if params.enable_http_compression and body:
            encoding = response_encoding(headers.get("accept-encoding", ""), RESPONSE_ENCODINGS)
        if encoding is not None:
            body = await _in_thread(encode, body, encoding)
            response_headers.append((b"content-encoding", encoding.encode()))
        await _respond(send, 200, response_headers, body)

    async def _execute(
        self, lease: Lease, params: QueryParams, reader: BodyReader, decoder: BodyDecoder
    ) -> tuple[QueryOutcome, str] | Streamed:
        # As in ClickHouse, the body continues the query parameter (a newline between them).
        head = bytearray((params.query + "\n").encode() if params.query else b"")
        while len(head) < HEAD_BYTES and not reader.done:
            head += decoder.feed(await reader.read())
        insert = insert_head(bytes(head[:HEAD_BYTES]))
        if insert is not None:
            inserter = await _in_thread(lease.start_insert, insert.statement, insert.format)
            # One append runs in a worker thread while the next chunk is received and decoded.
            appending: asyncio.Future[None] | None = None
            try:
                pending = bytearray(head[insert.data_offset :])
                del head
                while not reader.done:
                    pending += decoder.feed(await reader.read())
                    if len(pending) >= APPEND_BYTES:
                        if appending is not None:
                            await appending
                        appending = asyncio.ensure_future(
                            _in_thread(lease.append, inserter, bytes(pending))
                        )
                        pending.clear()
                decoder.finish()
                if appending is not None:
                    await appending
                    appending = None
                if pending:
                    await _in_thread(lease.append, inserter, bytes(pending))
                outcome: QueryOutcome = await _in_thread(lease.finish, inserter)
            except BaseException:
                if appending is not None:
                    with contextlib.suppress(BaseException):
                        await appending
                await _in_thread(lease.cancel, inserter)
                raise
            return outcome, params.default_format
        while not reader.done:
            head += decoder.feed(await reader.read())
            if len(head) > MAX_QUERY_BYTES:
                raise ClickHouseError.of(229, f"Query is too large ({len(head)} bytes)")
        decoder.finish()
        try:
            sql = head.decode()
        except UnicodeDecodeError as exc:
            raise ClickHouseError.of(36, f"Query is not valid UTF-8: {exc}") from None
        if not sql.strip():
            raise ClickHouseError.of(62, "Empty query")
        fmt = output_format(sql, params.default_format)
        streamable = fmt.lower() in STREAMABLE_FORMATS and leading_keyword(sql) in READ_KEYWORDS
        if streamable and not params.wait_end_of_query:
            # Without wait_end_of_query ClickHouse streams the answer; so do we, block by block.
            stream = await _in_thread(lease.open_stream, sql, params.default_format, params.bind)
            try:
                first = await _in_thread(lease.next_chunk, stream)
                second = None if first is None else await _in_thread(lease.next_chunk, stream)
            except BaseException:
                await _in_thread(lease.close_stream, stream)
                raise
            if second is not None:
                return Streamed(stream, [first or b"", second], fmt)
            await _in_thread(lease.close_stream, stream)
            return QueryOutcome(first or b""), fmt
        outcome = await _in_thread(lease.query, sql, params.default_format, params.bind)
        return outcome, fmt

    async def _send_stream(
        self,
        send: Send,
        lease: Lease,
        streamed: Streamed,
        params: QueryParams,
        headers: dict[str, str],
        base_headers: list[tuple[bytes, bytes]],
    ) -> None:
        encoding = None
        if params.enable_http_compression:
            encoding = response_encoding(headers.get("accept-encoding", ""), RESPONSE_ENCODINGS)
        encoder = StreamEncoder(encoding) if encoding else None
        response_headers = [
            *base_headers,
            (b"content-type", content_type(streamed.format).encode()),
            (b"x-clickhouse-format", streamed.format.encode()),
            (b"x-clickhouse-summary", json.dumps(QueryOutcome(b"").summary()).encode()),
        ]
        if encoding:
            response_headers.append((b"content-encoding", encoding.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})

        def encoded(data: bytes) -> bytes:
            return encoder.compress(data) if encoder else data

        def next_piece() -> bytes | None:
            data = lease.next_chunk(streamed.stream)
            return None if data is None else encoded(data)

        try:
            for data in streamed.first:
                await send({"type": "http.response.body", "body": encoded(data), "more_body": True})
            while (piece := await _in_thread(next_piece)) is not None:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        except ClickHouseError as error:
            # Headers are gone: like ClickHouse, the exception text ends the body.
            log.info("query failed while streaming", extra={"code": error.code})
            tail = b"\n" + error.body(self.engine.version)
            await send({"type": "http.response.body", "body": encoded(tail), "more_body": True})
        finally:
            await _in_thread(lease.close_stream, streamed.stream)
        final = encoder.flush() if encoder else b""
        await send({"type": "http.response.body", "body": final, "more_body": False})


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    settings: WarehouseSettings,
    engine: Engine | None = None,
    on_start: Callable[[Engine], None] | None = None,
) -> WarehouseApp:
    """The composition root: the engine on ``settings.data_dir`` behind the HTTP interface."""
    return WarehouseApp(settings, engine, on_start)
