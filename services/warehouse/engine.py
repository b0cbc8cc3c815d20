"""chDB as the engine behind the HTTP interface: connections, sessions, settings, inserts."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chdb import state

from services.warehouse.protocol import (
    ClickHouseError,
    leading_keyword,
    quote_identifier,
    settings_statement,
)

log = logging.getLogger("services.warehouse.engine")


@dataclass(frozen=True)
class QueryOutcome:
    """What one statement returned and did, for the body and X-ClickHouse-Summary."""

    body: bytes
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_seconds: float = 0.0

    def summary(self) -> dict[str, str]:
        """X-ClickHouse-Summary, with the values as strings like ClickHouse sends them."""
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": "0",
            "result_rows": str(self.written_rows),
            "result_bytes": str(self.written_bytes),
            "elapsed_ns": str(int(self.elapsed_seconds * 1e9)),
        }


def _engine_error(exc: Exception) -> ClickHouseError:
    return ClickHouseError.from_engine(str(exc))


@dataclass
class Session:
    """A named HTTP session: one chDB connection whose USE/SET/temporary tables persist."""

    key: str
    user: str
    connection: Any
    timeout: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    database: str | None = None
    # The request settings (URL parameters) left applied on the connection, the session's own
    # values they replaced, and their values as the engine reports them once applied.
    overlay: dict[str, str] = field(default_factory=dict)
    saved: dict[str, str] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        return not self.lock.locked() and now - self.last_used > self.timeout


class Lease:
    """A connection for one request: a session's (kept) or a fresh one (closed after)."""

    def __init__(self, connection: Any, session: Session | None) -> None:
        self.connection = connection
        self.session = session

    def _run(self, sql: str) -> None:
        self.connection.query(sql, "TabSeparated")

    def _values(self, names: Iterable[str]) -> dict[str, str]:
        listed = ", ".join("'" + name + "'" for name in names)
        answer = self.connection.query(
            f"SELECT name, value FROM system.settings WHERE name IN ({listed})", "TabSeparatedRaw"
        )
        values: dict[str, str] = {}
        for line in answer.bytes().decode().splitlines():
            name, _, value = line.partition("\t")
            values[name] = value
        return values

    def prepare(self, database: str | None, settings: Mapping[str, str]) -> None:
        """Select the database and apply the request's settings (for this request only).

        In a session the settings stay applied while the next requests bring the same ones
        (clickhouse-connect sends the same on every call), and are undone when they change.
        """
        session = self.session
        try:
            if database and (session is None or session.database != database):
                self._run(f"USE {quote_identifier(database)}")
                if session is not None:
                    session.database = database
            if session is None:
                if settings:
                    self._run(settings_statement(settings))
                return
            if dict(settings) == session.overlay:
                return
            self._drop_overlay(session)
            if settings:
                saved = self._values(settings)
                self._run(settings_statement(settings))
                session.saved = saved
                session.overlay = dict(settings)
                session.applied = self._values(settings)
        except ClickHouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None

    def _drop_overlay(self, session: Session) -> None:
        saved = session.saved
        session.overlay, session.saved, session.applied = {}, {}, {}
        if not saved:
            return
        try:
            self._run(settings_statement(saved))
        except Exception:  # noqa: BLE001 - restore what can be restored, one by one
            for name, value in saved.items():
                with contextlib.suppress(Exception):
                    self._run(settings_statement({name: value}))

    def _after_statement(self, sql: str) -> None:
        """Keep the session's bookkeeping true after the user's own SET or USE."""
        session = self.session
        if session is None:
            return
        keyword = leading_keyword(sql)
        if keyword == "USE":
            session.database = None
        elif keyword == "SET" and session.overlay:
            # A setting the user SET is the session's own value now: never restore it.
            current = self._values(session.applied)
            for name, value in session.applied.items():
                if current.get(name) != value:
                    session.saved.pop(name, None)
            self._drop_overlay(session)

    def query(self, sql: str, fmt: str, bind: Mapping[str, str]) -> QueryOutcome:
        """Run one statement and return its whole answer."""
        try:
            try:
                result = self.connection.query(sql, fmt, params=dict(bind) if bind else None)
            finally:
                self._after_statement(sql)
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None
        if result is None:
            return QueryOutcome(b"")
        return QueryOutcome(
            body=result.bytes(),
            read_rows=int(result.rows_read()),
            read_bytes=int(result.bytes_read()),
            written_rows=int(getattr(result, "rows_written", lambda: 0)()),
            written_bytes=int(getattr(result, "bytes_written", lambda: 0)()),
            elapsed_seconds=float(result.elapsed()),
        )

    def open_stream(self, sql: str, fmt: str, bind: Mapping[str, str]) -> Any:
        """Start a query whose answer is fetched block by block."""
        try:
            try:
                return self.connection.send_query(sql, fmt, params=dict(bind) if bind else None)
            finally:
                self._after_statement(sql)
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None

    @staticmethod
    def next_chunk(stream: Any) -> bytes | None:
        """The next piece of a streamed answer, None at its end."""
        try:
            while True:
                piece = stream.fetch()
                if piece is None:
                    return None
                data: bytes = piece.bytes()
                if data:
                    return data
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None

    @staticmethod
    def close_stream(stream: Any) -> None:
        """Stop a streamed answer (cancels it when unfinished)."""
        with contextlib.suppress(Exception):
            stream.close()

    def start_insert(self, statement: str, fmt: str) -> Any:
        """Open a streaming insert of ``fmt``-encoded data."""
        try:
            return self.connection.send_insert(statement, fmt)
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None

    @staticmethod
    def append(inserter: Any, data: bytes) -> None:
        """Push one chunk of insert data."""
        try:
            inserter.append(data)
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None

    @staticmethod
    def finish(inserter: Any) -> QueryOutcome:
        """Commit a streaming insert."""
        try:
            result = inserter.finish()
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError/ChdbError
            raise _engine_error(exc) from None
        return QueryOutcome(
            b"",
            written_rows=result.rows_written,
            written_bytes=result.bytes_written,
            elapsed_seconds=result.elapsed,
        )

    @staticmethod
    def cancel(inserter: Any) -> None:
        """Abort a streaming insert."""
        with contextlib.suppress(Exception):
            inserter.cancel()

    def release(self) -> None:
        """Give a session back, or close a one-request connection."""
        if self.session is None:
            with contextlib.suppress(Exception):
                self.connection.close()
            return
        self.session.last_used = time.monotonic()
        self.session.lock.release()


class Engine:
    """One chDB engine bound to the data folder, shared by every request."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._anchor: Any = None
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        self.version = ""
        self.timezone = "UTC"

    def open(self) -> None:
        """Start the engine (it keeps running while the anchor connection is open)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._anchor = state.connect(str(self.data_dir))
        row = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode()
        self.version, self.timezone = row.strip().split("\t")

    def connect(self, readonly: bool) -> Any:
        """A new connection; read-only ones run with readonly=2 (settings yes, writes no)."""
        target = str(self.data_dir) + ("?readonly=2" if readonly else "")
        try:
            return state.connect(target)
        except Exception as exc:  # noqa: BLE001 - chDB raises bare RuntimeError
            raise _engine_error(exc) from None

    def lease(
        self,
        user: str,
        readonly: bool,
        session_id: str | None = None,
        session_timeout: int = 60,
        session_check: bool = False,
    ) -> Lease:
        """A connection for one request, from the named session or fresh."""
        if session_id is None:
            return Lease(self.connect(readonly), None)
        with self._sessions_lock:
            # Sessions belong to a user, as in ClickHouse: the same id of another user is another session.
            key = f"{user}\0{session_id}"
            session = self._sessions.get(key)
            if session is None:
                if session_check:
                    raise ClickHouseError.of(372, f"Session {session_id} not found")
                session = Session(key, user, self.connect(readonly), session_timeout)
                self._sessions[key] = session
            elif session_timeout != session.timeout:
                session.timeout = session_timeout
            if not session.lock.acquire(blocking=False):
                raise ClickHouseError.of(
                    373, f"Session {session_id} is locked by a concurrent client"
                )
        return Lease(session.connection, session)

    def expire_sessions(self) -> int:
        """Close sessions idle for longer than their timeout; returns how many."""
        now = time.monotonic()
        with self._sessions_lock:
            expired = [s for s in self._sessions.values() if s.expired(now)]
            for session in expired:
                del self._sessions[session.key]
        for session in expired:
            with contextlib.suppress(Exception):
                session.connection.close()
        return len(expired)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @contextlib.contextmanager
    def connection(self, readonly: bool = False) -> Iterator[Lease]:
        """A one-off lease for in-process work (migrations at start)."""
        lease = Lease(self.connect(readonly), None)
        try:
            yield lease
        finally:
            lease.release()

    def close(self) -> None:
        """Close every session and the anchor: the engine flushes and shuts down."""
        with self._sessions_lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            with contextlib.suppress(Exception):
                session.connection.close()
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None
