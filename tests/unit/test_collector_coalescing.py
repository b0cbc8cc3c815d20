"""The coalescing transport: writes made in one loop callback leave in one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from services.collector.http import CoalescingTransport


class RecordingTransport:
    """The few transport calls CoalescingTransport makes, recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True
        self.events.append("close")

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555)}.get(name, default)


def _coalescing() -> tuple[CoalescingTransport, RecordingTransport]:
    real = RecordingTransport()
    return CoalescingTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]  # duck-typed transport


def test_writes_of_one_callback_leave_in_one_write() -> None:
    async def scenario() -> list[bytes]:
        transport, real = _coalescing()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        assert real.writes == []  # held until the callback returns
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_writes_across_awaits_keep_their_order() -> None:
    async def scenario() -> list[bytes]:
        transport, real = _coalescing()
        transport.write(b"head")
        await asyncio.sleep(0.01)
        transport.write(b"chunk-1")
        transport.write(b"chunk-2")
        await asyncio.sleep(0.01)
        transport.write(b"end")
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == [b"head", b"chunk-1chunk-2", b"end"]


def test_explicit_flush_sends_at_once_and_leaves_nothing_for_later() -> None:
    async def scenario() -> list[bytes]:
        transport, real = _coalescing()
        transport.write(b"a")
        transport.write(b"b")
        transport.flush()
        assert real.writes == [b"ab"]
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == [b"ab"]


def test_close_sends_what_is_held_first() -> None:
    async def scenario() -> list[str]:
        transport, real = _coalescing()
        transport.write(b"last response")
        transport.close()
        assert real.writes == [b"last response"]
        return real.events

    assert asyncio.run(scenario()) == ["write", "close"]


def test_empty_writes_and_writes_to_a_closing_transport_are_dropped() -> None:
    async def scenario() -> list[bytes]:
        transport, real = _coalescing()
        transport.write(b"")
        await asyncio.sleep(0)
        transport.write(b"too late")
        real.closed = True
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == []


def test_other_calls_reach_the_real_transport() -> None:
    async def scenario() -> Any:
        transport, _real = _coalescing()
        transport.write(b"x")
        assert transport.get_write_buffer_size() == 0  # flushes first, so the size is honest
        return transport.get_extra_info("peername")

    assert asyncio.run(scenario()) == ("127.0.0.1", 5555)
