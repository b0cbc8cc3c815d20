"""A hot-path Avro encoder compiled from AvroCodec's schema, byte-identical to AvroCodec.encode."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from services.common.avro import MARKER, AvroCodec

log = logging.getLogger(__name__)

FieldWriter = Callable[[Any, list[bytes]], None]


class UnsupportedSchema(Exception):
    """The schema uses a type this compiler does not handle; use AvroCodec instead."""


def _varint(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    if zigzag < 0x80:
        return _SMALL[zigzag]
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _string(value: str, out: list[bytes]) -> None:
    data = value.encode()
    out.append(_varint(len(data)))
    out.append(data)


def _boolean(value: bool, out: list[bytes]) -> None:
    out.append(b"\x01" if value else b"\x00")


def _long(value: int, out: list[bytes]) -> None:
    out.append(_varint(value))


def _timestamp_millis(value: int | datetime.datetime, out: list[bytes]) -> None:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise UnsupportedSchema("naive datetime")
        value = int(value.timestamp() * 1000)
    out.append(_varint(value))


def _decimal(scale: int) -> FieldWriter:
    def write(value: Decimal, out: list[bytes]) -> None:
        sign, digits, exponent = value.as_tuple()
        if not isinstance(exponent, int) or -exponent > scale:
            raise UnsupportedSchema(f"decimal {value} does not fit scale {scale}")
        unscaled = int(value.scaleb(scale))
        data = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
        out.append(_varint(len(data)))
        out.append(data)

    return write


def _map_of_strings(value: Mapping[str, str], out: list[bytes]) -> None:
    if value:
        out.append(_varint(len(value)))
        for key, item in value.items():
            _string(key, out)
            _string(item, out)
    out.append(b"\x00")


def _compile(schema: Any) -> FieldWriter:
    if isinstance(schema, str):
        primitive: dict[str, FieldWriter] = {"string": _string, "boolean": _boolean, "long": _long}
        if schema in primitive:
            return primitive[schema]
        raise UnsupportedSchema(schema)
    if isinstance(schema, list):
        if len(schema) == 2 and schema[0] == "null":
            inner = _compile(schema[1])

            def optional(value: Any, out: list[bytes]) -> None:
                if value is None:
                    out.append(b"\x00")
                else:
                    out.append(b"\x02")
                    inner(value, out)

            return optional
        raise UnsupportedSchema(str(schema))
    kind, logical = schema.get("type"), schema.get("logicalType")
    if kind == "long" and logical == "timestamp-millis":
        return _timestamp_millis
    if kind == "bytes" and logical == "decimal":
        return _decimal(int(schema.get("scale", 0)))
    if kind == "enum":
        indexes = {symbol: _varint(i) for i, symbol in enumerate(schema["symbols"])}

        def enum(value: str, out: list[bytes]) -> None:
            out.append(indexes[value])

        return enum
    if kind == "map" and schema.get("values") == "string":
        return _map_of_strings
    if isinstance(kind, str) and logical is None and kind in ("string", "boolean", "long"):
        return _compile(kind)
    raise UnsupportedSchema(str(schema))


class RecordEncoder:
    """Encodes records of one topic like ``codec.encode`` does, several times faster.

    Compiled from the codec's parsed schema; ``fast`` is False (and every call goes to
    AvroCodec) when the schema holds a type the compiler does not know or when a
    self-check against AvroCodec on ``sample`` differs.
    """

    def __init__(self, codec: AvroCodec, sample: Mapping[str, Any]) -> None:
        self.codec = codec
        self._header = MARKER + codec.fingerprint
        self.fast = False
        try:
            self._fields = [
                (field["name"], _compile(field["type"])) for field in codec.schema["fields"]
            ]
            self.fast = self._encode(sample) == codec.encode(sample)
        except (UnsupportedSchema, KeyError, TypeError, AttributeError) as exc:
            log.warning("fast Avro encoder unavailable, using AvroCodec", extra={"why": str(exc)})
        if not self.fast:
            log.warning("fast Avro encoder disabled", extra={"topic": codec.topic})

    def _encode(self, record: Mapping[str, Any]) -> bytes:
        out = [self._header]
        for name, write in self._fields:
            write(record[name], out)
        return b"".join(out)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Single-object encoding of ``record``; AvroCodec's CodecError on a bad record."""
        if self.fast:
            try:
                return self._encode(record)
            except (UnsupportedSchema, KeyError, TypeError, AttributeError, ValueError):
                pass  # let AvroCodec produce the precise error (or the bytes)
        return self.codec.encode(record)
