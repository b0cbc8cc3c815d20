"""The ClickHouse HTTP interface as pure functions: parameters, credentials, formats, errors."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Parameters the HTTP layer consumes itself; they are never SET on the engine.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "quota_key",
        "role",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "cancel_http_readonly_queries_on_client_close",
        "max_query_size_http",
    }
)

SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
INSERT_HEAD = re.compile(
    rb"^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*(?:\r?\n)?",
    re.IGNORECASE | re.DOTALL,
)
NOT_A_DATA_INSERT = re.compile(rb"\b(VALUES|SELECT|WITH)\b", re.IGNORECASE)
HEAD_BYTES = 65536
# Formats whose answer is a plain concatenation of per-block pieces, so it can be streamed.
STREAMABLE_FORMATS = frozenset(
    {
        "native",
        "tabseparated",
        "tsv",
        "tabseparatedraw",
        "tsvraw",
        "csv",
        "rowbinary",
        "jsoneachrow",
        "jsoncompacteachrow",
        "jsonstringseachrow",
    }
)

# exceptionCodeToHTTPStatus of ClickHouse's HTTP server, by error code number.
_STATUS_BY_CODE: dict[int, int] = {194: 401}
_STATUS_BY_CODE.update(dict.fromkeys((192, 193, 497, 512, 516), 403))
_STATUS_BY_CODE.update(
    dict.fromkeys(
        (6, 8, 15, 25, 26, 27, 36, 37, 38, 41, 44, 53, 62, 72, 117, 123, 167, 168, 223, 321, 376)
        + (427, 441, 675, 676),
        400,
    )
)
_STATUS_BY_CODE.update(dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 511), 404))
_STATUS_BY_CODE.update({229: 413, 48: 501, 76: 503, 209: 503, 439: 503, 381: 411, 159: 408})
_STATUS_BY_CODE[779] = 415

CODE_NAMES = {
    36: "BAD_ARGUMENTS",
    62: "SYNTAX_ERROR",
    89: "UNKNOWN_COMPRESSION_METHOD",
    164: "READONLY",
    271: "CANNOT_DECOMPRESS",
    372: "SESSION_NOT_FOUND",
    373: "SESSION_IS_LOCKED",
    1002: "UNKNOWN_EXCEPTION",
    516: "AUTHENTICATION_FAILED",
}
_CODE_IN_MESSAGE = re.compile(r"Code: (\d+)\.")
_VERSION_TRAILER = re.compile(r"\(version [^)]*\)\s*$")


class ClickHouseError(Exception):
    """An error answered as ClickHouse does: code, ``Code: N. DB::Exception: ...`` text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def of(cls, code: int, message: str) -> ClickHouseError:
        """An error with ClickHouse's text layout for ``code``."""
        name = CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")

    @classmethod
    def from_engine(cls, text: str) -> ClickHouseError:
        """Wrap an engine error text (it already reads ``Code: N. DB::Exception: ...``)."""
        text = text.strip()
        start = text.find("Code: ")
        if start > 0:
            text = text[start:]
        match = _CODE_IN_MESSAGE.match(text)
        if match is None:
            return cls.of(1002, text or "unknown error")
        return cls(int(match.group(1)), text)

    @property
    def status(self) -> int:
        """The HTTP status ClickHouse answers this error with."""
        return http_status(self.code)

    def body(self, version: str) -> bytes:
        """The response body, with the server version trailer ClickHouse adds."""
        if _VERSION_TRAILER.search(self.message):
            return f"{self.message.rstrip()}\n".encode()
        return f"{self.message} (version {version})\n".encode()


def http_status(code: int) -> int:
    """The HTTP status of an exception code (ClickHouse's exceptionCodeToHTTPStatus)."""
    return _STATUS_BY_CODE.get(code, 500)


@dataclass(frozen=True)
class Credentials:
    """Who the request says it is; ``given`` is False when it carried no credentials at all."""

    user: str
    password: str
    given: bool


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> Credentials:
    """Credentials from X-ClickHouse-User/-Key, basic auth, or user/password parameters."""
    if "x-clickhouse-user" in headers or "x-clickhouse-key" in headers:
        return Credentials(
            headers.get("x-clickhouse-user", "default"), headers.get("x-clickhouse-key", ""), True
        )
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ClickHouseError.of(516, "Invalid basic authentication header") from exc
        user, _, password = decoded.partition(":")
        return Credentials(user or "default", password, True)
    if "user" in params or "password" in params:
        return Credentials(params.get("user", "default"), params.get("password", ""), True)
    return Credentials("default", "", False)


@dataclass(frozen=True)
class QueryParams:
    """The URL parameters of one request, split into what the HTTP layer and the engine use."""

    query: str = ""
    database: str | None = None
    default_format: str = "TabSeparated"
    query_id: str | None = None
    session_id: str | None = None
    session_timeout: int | None = None
    session_check: bool = False
    enable_http_compression: bool = False
    native_compression: bool = False
    wait_end_of_query: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    bind: dict[str, str] = field(default_factory=dict)


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def query_params(pairs: list[tuple[str, str]], headers: Mapping[str, str]) -> QueryParams:
    """Parse the query string pairs (and X-ClickHouse-* headers) of a request."""
    params = dict(pairs)
    settings: dict[str, str] = {}
    bind: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("param_"):
            bind[name[6:]] = value
        elif name in TRANSPORT_PARAMS or name.startswith("http_"):
            continue
        elif not SETTING_NAME.match(name):
            raise ClickHouseError.of(115, f"Unknown setting '{name}'")
        else:
            settings[name] = value
    timeout: int | None = None
    if params.get("session_timeout"):
        try:
            timeout = int(params["session_timeout"])
        except ValueError as exc:
            raise ClickHouseError.of(
                36, f"Invalid session timeout: '{params['session_timeout']}'"
            ) from exc
        if not 0 < timeout <= 3600:
            raise ClickHouseError.of(
                36, f"Session timeout '{timeout}' is larger than max_session_timeout: 3600"
            )
    return QueryParams(
        query=params.get("query", ""),
        database=params.get("database") or headers.get("x-clickhouse-database") or None,
        default_format=headers.get("x-clickhouse-format")
        or params.get("default_format")
        or "TabSeparated",
        query_id=params.get("query_id") or headers.get("x-clickhouse-query-id") or None,
        session_id=params.get("session_id") or None,
        session_timeout=timeout,
        session_check=_flag(params.get("session_check")),
        enable_http_compression=_flag(params.get("enable_http_compression")),
        native_compression=_flag(params.get("decompress")) or _flag(params.get("compress")),
        wait_end_of_query=_flag(params.get("wait_end_of_query")),
        settings=settings,
        bind=bind,
    )


@dataclass(frozen=True)
class InsertHead:
    """An ``INSERT ... FORMAT name`` statement and where its data starts in the stream."""

    statement: str
    format: str
    data_offset: int


def insert_head(head: bytes) -> InsertHead | None:
    """The INSERT-with-data statement at the start of ``head``, if the request is one."""
    match = INSERT_HEAD.match(head)
    if match is None or NOT_A_DATA_INSERT.search(match.group(1)):
        return None
    try:
        statement = match.group(1).decode()
    except UnicodeDecodeError:
        return None
    return InsertHead(statement, match.group(2).decode(), match.end())


LEADING_KEYWORD = re.compile(r"^(?:\s+|--[^\n]*\n|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)
READ_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "EXISTS"})


def leading_keyword(sql: str) -> str:
    """The statement's first keyword, upper-cased (comments and parentheses skipped)."""
    match = LEADING_KEYWORD.match(sql)
    return match.group(1).upper() if match else ""


def output_format(sql: str, default_format: str) -> str:
    """The format the answer is in: a trailing FORMAT clause, else the default."""
    match = TRAILING_FORMAT.search(sql)
    return match.group(1) if match else default_format


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse sends for an output format."""
    lower = fmt.lower()
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        present = "present" if "withnames" in lower else "absent"
        return f"text/csv; charset=UTF-8; header={present}"
    if lower.endswith("eachrow") or lower.endswith("eachrowwithprogress"):
        return "application/x-ndjson; charset=UTF-8"
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower in {"native", "rowbinary", "parquet", "arrow", "arrowstream", "orc", "avro"}:
        return "application/octet-stream"
    if lower.startswith("rowbinary"):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def response_encoding(accept_encoding: str, available: tuple[str, ...]) -> str | None:
    """The first encoding of the client's Accept-Encoding list this server can produce."""
    for item in accept_encoding.split(","):
        name = item.split(";")[0].strip().lower()
        if name in available:
            return name
    return None


def settings_statement(settings: Mapping[str, str]) -> str:
    """One ``SET a = 'x', b = 'y'`` statement for ``settings``."""
    parts = []
    for name, value in settings.items():
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{name} = '{escaped}'")
    return "SET " + ", ".join(parts)


def quote_identifier(name: str) -> str:
    """A back-quoted ClickHouse identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
