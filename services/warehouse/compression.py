"""HTTP body codecs: streaming decoders for lz4/zstd/gzip/deflate request bodies, response encoders."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import Any, Protocol

import lz4.frame
import zstandard

from services.warehouse.protocol import ClickHouseError

RESPONSE_ENCODINGS: tuple[str, ...] = ("lz4", "zstd", "gzip", "deflate")


class _FrameDecoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes) -> bytes: ...


class _ZstdFrame:
    """One zstd frame; adapts zstandard's decompressobj to the eof/unused_data protocol."""

    def __init__(self) -> None:
        self._obj: Any = zstandard.ZstdDecompressor().decompressobj()

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._obj.unused_data)

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._obj.decompress(data))


class _Lz4Frame:
    def __init__(self) -> None:
        self._obj = lz4.frame.LZ4FrameDecompressor()

    @property
    def eof(self) -> bool:
        return bool(self._obj.eof)

    @property
    def unused_data(self) -> bytes:
        return bytes(self._obj.unused_data or b"")

    def decompress(self, data: bytes) -> bytes:
        return bytes(self._obj.decompress(data))


_FRAMES: dict[str, Callable[[], _FrameDecoder]] = {
    "lz4": _Lz4Frame,
    "zstd": _ZstdFrame,
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "x-gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": lambda: zlib.decompressobj(),
}


class BodyDecoder:
    """Decodes a request body fed chunk by chunk; bodies may hold several concatenated frames."""

    def __init__(self, encoding: str) -> None:
        if encoding not in _FRAMES:
            raise ClickHouseError.of(89, f"Unknown compression method '{encoding}'")
        self.encoding = encoding
        self._new = _FRAMES[encoding]
        self._frame: _FrameDecoder | None = None
        self._pending = False

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of the next chunk of the body."""
        out = bytearray()
        try:
            while data:
                if self._frame is None:
                    self._frame = self._new()
                out += self._frame.decompress(data)
                self._pending = not self._frame.eof
                if self._frame.eof:
                    data = self._frame.unused_data
                    self._frame = None
                else:
                    data = b""
        except (RuntimeError, zlib.error, zstandard.ZstdError) as exc:
            raise ClickHouseError.of(
                271, f"Cannot decompress {self.encoding} request body: {exc}"
            ) from exc
        return bytes(out)

    def finish(self) -> None:
        """Raise when the body ended in the middle of a frame."""
        if self._pending:
            raise ClickHouseError.of(271, f"Truncated {self.encoding} request body")


class IdentityDecoder(BodyDecoder):
    """The body as it is."""

    def __init__(self) -> None:
        self.encoding = "identity"

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> None:
        return None


def body_decoder(content_encoding: str) -> BodyDecoder:
    """The decoder for a Content-Encoding header value."""
    encoding = content_encoding.strip().lower()
    if encoding in {"", "identity", "none"}:
        return IdentityDecoder()
    return BodyDecoder(encoding)


def encode(data: bytes, encoding: str) -> bytes:
    """Compress a whole response body."""
    if encoding == "lz4":
        return bytes(lz4.frame.compress(data))
    if encoding == "zstd":
        return bytes(zstandard.ZstdCompressor(level=1).compress(data))
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(data, 3)
    raise ValueError(encoding)


class StreamEncoder:
    """Compresses a response sent in pieces, as one frame (lz4, zstd) or stream (gzip, deflate)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._started = False
        self._lz4: Any = None
        self._other: Any = None
        if encoding == "lz4":
            self._lz4 = lz4.frame.LZ4FrameCompressor()
        elif encoding == "zstd":
            self._other = zstandard.ZstdCompressor(level=1).compressobj()
        elif encoding == "gzip":
            self._other = zlib.compressobj(3, zlib.DEFLATED, 31)
        elif encoding == "deflate":
            self._other = zlib.compressobj(3)
        else:
            raise ValueError(encoding)

    def compress(self, data: bytes) -> bytes:
        """The compressed bytes to send for ``data`` (may be empty while buffering)."""
        if self._lz4 is not None:
            head = b"" if self._started else bytes(self._lz4.begin())
            self._started = True
            return head + bytes(self._lz4.compress(data))
        return bytes(self._other.compress(data))

    def flush(self) -> bytes:
        """The end of the frame or stream."""
        if self._lz4 is not None:
            head = b"" if self._started else bytes(self._lz4.begin())
            self._started = True
            return head + bytes(self._lz4.flush())
        return bytes(self._other.flush())
