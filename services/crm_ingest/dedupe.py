"""A persisted dedupe window (SQLite): delivered event IDs and already-used signatures."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (event_id TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS signatures (signature TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS delivered_expiry ON delivered (expires_at);
CREATE INDEX IF NOT EXISTS signatures_expiry ON signatures (expires_at);
"""
_PURGE_EVERY = 500


class DedupeStore:
    """Event IDs delivered inside the window, and signatures seen inside their tolerance.

    Event IDs are recorded only after the broker acknowledged the event, so a delivery
    that failed is published again on retry; a crash between the ack and the record
    can repeat one event, which downstream consumers absorb by event ID.
    """

    def __init__(self, path: Path, window: timedelta) -> None:
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
        self._window = window
        self._lock = threading.Lock()
        self._writes = 0
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def delivered(self, event_ids: Iterable[str], now: datetime) -> set[str]:
        """Which of ``event_ids`` were delivered inside the window."""
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT event_id FROM delivered WHERE expires_at > ? AND event_id IN ({marks})",
                    [now.timestamp(), *chunk],
                )
                found.update(row[0] for row in rows)
        return found

    def record_delivered(self, event_ids: Iterable[str], now: datetime) -> None:
        """Remember ``event_ids`` as delivered (call after the broker's acknowledgement)."""
        expires = (now + self._window).timestamp()
        rows = [(event_id, expires) for event_id in dict.fromkeys(event_ids)]
        if not rows:
            return
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO delivered (event_id, expires_at) VALUES (?, ?)", rows
            )
            self._maybe_purge(now, len(rows))

    def claim_signature(self, signature: str, expires_at: datetime, now: datetime) -> bool:
        """Record a signature's first use; False when it was already used (a replay)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM signatures WHERE signature = ? AND expires_at <= ?",
                (signature, now.timestamp()),
            )
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO signatures (signature, expires_at) VALUES (?, ?)",
                (signature, expires_at.timestamp()),
            )
            self._maybe_purge(now, 1)
            return cursor.rowcount == 1

    def release_signature(self, signature: str) -> None:
        """Forget a claimed signature (its request was not processed, so a retry may reuse it)."""
        with self._lock:
            self._db.execute("DELETE FROM signatures WHERE signature = ?", (signature,))

    def _maybe_purge(self, now: datetime, writes: int) -> None:
        self._writes += writes
        if self._writes < _PURGE_EVERY:
            return
        self._writes = 0
        self._db.execute("DELETE FROM delivered WHERE expires_at <= ?", (now.timestamp(),))
        self._db.execute("DELETE FROM signatures WHERE expires_at <= ?", (now.timestamp(),))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
