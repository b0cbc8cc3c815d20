"""uvicorn's httptools protocol with one socket write per response instead of two.

uvicorn writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``; uvloop
sends each write to the socket at once. Each send is a system call and a wake-up of
the reader; the two took about a sixth of the collector's time per single-event
request. Holding writes until the end of the current event-loop callback joins
them: the app sends both messages without yielding in between, so the headers and
the body leave in one ``send``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport proxy that joins the writes made within one loop callback into one write.

    Held bytes go out when the loop next runs its ready callbacks, before the transport
    closes, and before anyone asks for its write buffer size, so nothing is reordered
    or lost; flow control still sees the real transport.
    """

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Hold ``data`` until the current callback returns (empty writes are dropped)."""
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data)

    def flush(self) -> None:
        """Write everything held, in order, with one call."""
        held = self._held
        if not held:
            return
        self._held = []
        if self._transport.is_closing():
            return
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        self.flush()
        return self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # pause_reading, resume_reading, get_extra_info, set_protocol, abort, ...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing each response with one system call.

    Selected with ``uvicorn.run(..., http="services.collector.http:CoalescingHttpToolsProtocol")``.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]  # duck-typed transport

    def on_response_complete(self) -> None:
        # The response is whole: send it now rather than after the loop's next turn.
        self.transport.flush()  # type: ignore[attr-defined]  # our CoalescingTransport
        super().on_response_complete()
