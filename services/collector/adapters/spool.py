"""A bounded, append-only durable spool on local disk with group fsync and ordered replay."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from services.collector.ports import Message
from services.common.errors import UnavailableError

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")  # payload length, CRC-32 of the payload
_SUFFIX = ".seg"
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[str, str | None, bytes])


@dataclass(frozen=True)
class Position:
    """Where replay stands: a segment number and a byte offset in it."""

    segment: int
    offset: int


def _segment_name(number: int) -> str:
    return f"{number:012d}{_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def frame(message: Message) -> bytes:
    """One spool record: header plus the msgpack of (topic, key, value)."""
    payload = _ENCODER.encode(message)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _scan(data: bytes, limit: int | None = None) -> tuple[list[Message], int]:
    """Whole, intact records (at most ``limit``); returns them and the offset after the last."""
    messages: list[Message] = []
    offset = 0
    while offset + _HEADER.size <= len(data) and (limit is None or len(messages) < limit):
        length, crc = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + length
        if end > len(data):
            break
        payload = data[offset + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        messages.append(_DECODER.decode(payload))
        offset = end
    return messages, offset


class Spool:
    """Messages the broker could not take yet, in arrival order, in one locked folder.

    ``append`` returns once the records are fsync'd (concurrent appends share one fsync);
    ``read`` returns the oldest durable records and ``commit`` forgets them. The folder is
    held with an exclusive flock, so two processes never write one spool.
    """

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._segments: dict[int, int] = {}  # segment number -> bytes written
        self._cursor = Position(0, 0)
        self._fd: int | None = None
        self._active = 0
        self._durable_size = 0  # bytes of the active segment known to be on disk
        self._written = 0  # total bytes ever appended (monotonic), for group commit
        self._synced = 0
        self._sync_task: asyncio.Task[None] | None = None

    def try_open(self) -> bool:
        """Lock the folder and recover its segments; False when another process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self._recover()
        return True

    def _recover(self) -> None:
        cursor_path = self.directory / "cursor"
        if cursor_path.exists():
            saved = json.loads(cursor_path.read_text())
            self._cursor = Position(int(saved["segment"]), int(saved["offset"]))
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            number = int(path.stem)
            if number < self._cursor.segment:
                path.unlink()
                continue
            data = path.read_bytes()
            _, end = _scan(data)
            if end != len(data):
                log.warning(
                    "spool: dropping a torn tail",
                    extra={"segment": path.name, "bytes": len(data) - end},
                )
                with path.open("r+b") as handle:
                    handle.truncate(end)
                    os.fsync(handle.fileno())
            self._segments[number] = end
        if self._segments:
            self._active = max(self._segments)
            if self._cursor.segment not in self._segments:
                self._cursor = Position(min(self._segments), 0)
        else:
            self._active = max(self._cursor.segment, 0)
            self._segments[self._active] = 0
            self._cursor = Position(self._active, 0)
        self._fd = os.open(
            self.directory / _segment_name(self._active),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o600,
        )
        self._durable_size = self._segments[self._active]
        _fsync_dir(self.directory)

    @property
    def pending_bytes(self) -> int:
        """Bytes written and not yet committed by replay."""
        return sum(self._segments.values()) - self._cursor.offset

    def has_room(self, headroom: int = 0) -> bool:
        """True when ``headroom`` more bytes fit (an empty spool always has room)."""
        pending = self.pending_bytes
        return pending == 0 or pending + headroom <= self.max_bytes

    def _roll(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._active += 1
        self._segments[self._active] = 0
        self._fd = os.open(
            self.directory / _segment_name(self._active),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND,
            0o600,
        )
        self._durable_size = 0
        _fsync_dir(self.directory)

    async def append(self, messages: Sequence[Message]) -> None:
        """Write messages and return once they are fsync'd; UnavailableError when full."""
        data = b"".join(frame(message) for message in messages)
        if self.pending_bytes + len(data) > self.max_bytes:
            raise UnavailableError("spool full and broker unreachable", retry_after_seconds=30)
        if self._fd is None:
            raise UnavailableError("spool is closed")
        if (
            self._segments[self._active]
            and self._segments[self._active] + len(data) > self.segment_bytes
        ):
            self._roll()
        os.write(self._fd, data)
        self._segments[self._active] += len(data)
        self._written += len(data)
        await self._sync_to(self._written)

    async def _sync_to(self, target: int) -> None:
        while self._synced < target:
            if self._sync_task is None or self._sync_task.done():
                self._sync_task = asyncio.create_task(self._sync())
            await asyncio.shield(self._sync_task)

    async def _sync(self) -> None:
        written, fd, size = self._written, self._fd, self._segments[self._active]
        if fd is not None:
            await asyncio.to_thread(os.fsync, fd)
        self._synced = max(self._synced, written)
        if fd == self._fd:
            self._durable_size = max(self._durable_size, size)

    def read(
        self, max_messages: int, max_bytes: int = 4 * 1024 * 1024
    ) -> tuple[list[Message], Position]:
        """The oldest durable messages not yet committed, and the position after them."""
        cursor = self._cursor
        while True:
            limit = (
                self._durable_size
                if cursor.segment == self._active
                else self._segments.get(cursor.segment, 0)
            )
            if cursor.offset < limit:
                break
            if cursor.segment >= self._active:
                return [], cursor
            cursor = Position(cursor.segment + 1, 0)
        path = self.directory / _segment_name(cursor.segment)
        with path.open("rb") as handle:
            handle.seek(cursor.offset)
            data = handle.read(min(limit - cursor.offset, max_bytes))
        messages, end = _scan(data, max_messages)
        if not messages and data:
            # A single record larger than max_bytes: read exactly that record.
            length, _ = _HEADER.unpack_from(data, 0)
            with path.open("rb") as handle:
                handle.seek(cursor.offset)
                data = handle.read(_HEADER.size + length)
            messages, end = _scan(data, max_messages)
        return messages, Position(cursor.segment, cursor.offset + end)

    def commit(self, position: Position) -> None:
        """Forget everything before ``position`` (durably), deleting finished segments."""
        for number in [n for n in self._segments if n < position.segment]:
            del self._segments[number]
            with contextlib.suppress(FileNotFoundError):
                (self.directory / _segment_name(number)).unlink()
        self._cursor = position
        if (
            position.segment == self._active
            and position.offset == self._segments[self._active]
            and position.offset >= self.segment_bytes
        ):
            self._roll()
        tmp = self.directory / "cursor.tmp"
        with tmp.open("w") as handle:
            handle.write(json.dumps({"segment": position.segment, "offset": position.offset}))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.directory / "cursor")
        _fsync_dir(self.directory)

    def close(self) -> None:
        """fsync, close the segment and release the folder."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def claim_spool(root: Path, max_bytes: int, segment_bytes: int) -> Spool:
    """The first spool folder under ``root`` no other process holds (slot-0, slot-1, ...)."""
    index = 0
    while True:
        spool = Spool(root / f"slot-{index}", max_bytes, segment_bytes)
        if spool.try_open():
            return spool
        index += 1


def orphan_spools(root: Path, max_bytes: int, segment_bytes: int) -> list[Spool]:
    """Opened spools of slots no process holds that still have records (e.g. fewer workers now)."""
    found: list[Spool] = []
    for directory in sorted(root.glob("slot-*")):
        spool = Spool(directory, max_bytes, segment_bytes)
        if not spool.try_open():
            continue
        if spool.pending_bytes:
            found.append(spool)
        else:
            spool.close()
    return found
