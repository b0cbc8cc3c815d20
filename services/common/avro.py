"""Avro single-object encoding (marker, CRC-64-AVRO fingerprint, body) over fastavro."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.topics import TOPICS_BY_NAME
from services.common.errors import CodecError

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
HISTORY_DIR = AVRO_DIR / "history"
MARKER = b"\xc3\x01"
HEADER_LENGTH = len(MARKER) + 8

Schema = dict[str, Any]


def _parse(schema: Schema) -> Schema:
    return cast(Schema, parse_schema(schema, _write_hint=False))


def schema_fingerprint(schema: Schema) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form."""
    canonical = to_parsing_canonical_form(_parse(schema))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


@cache
def load_schema(full_name: str) -> Schema:
    """The current version of a schema from ``schemas/avro/<full name>.avsc``, parsed."""
    path = AVRO_DIR / f"{full_name}.avsc"
    if not path.exists():
        raise CodecError(full_name, f"no schema file {path.name} in schemas/avro")
    return _parse(json.loads(path.read_text()))


@cache
def _historical_schemas(full_name: str) -> tuple[Schema, ...]:
    """Earlier versions kept as ``schemas/avro/history/<full name>.vN.avsc``."""
    return tuple(
        _parse(json.loads(path.read_text()))
        for path in sorted(HISTORY_DIR.glob(f"{full_name}.v*.avsc"))
    )


class AvroCodec:
    """Encodes records of one topic with the current schema; decodes any known writer version.

    ``reader_schema`` is the schema records are resolved to; ``writer_schemas`` are
    every version this reader can recognise by fingerprint (the reader's own is always
    included). Errors name the topic and the problem.
    """

    def __init__(
        self,
        topic: str,
        reader_schema: Schema,
        writer_schemas: Iterable[Schema] = (),
    ) -> None:
        self.topic = topic
        self.schema = _parse(reader_schema)
        self.fingerprint = schema_fingerprint(self.schema)
        self._header = MARKER + self.fingerprint
        self._writers: dict[bytes, Schema] = {self.fingerprint: self.schema}
        for schema in writer_schemas:
            parsed = _parse(schema)
            self._writers[schema_fingerprint(parsed)] = parsed

    @classmethod
    def for_topic(cls, topic_name: str) -> AvroCodec:
        """The codec of a topic from ``schemas.topics`` with every known version of its schema."""
        topic = TOPICS_BY_NAME[topic_name]
        return cls(
            topic_name,
            load_schema(topic.value_schema),
            _historical_schemas(topic.value_schema),
        )

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Single-object encoding of ``record`` under the current schema."""
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            fastavro.schemaless_writer(buffer, self.schema, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(
                self.topic, f"record does not match {self.schema['name']}: {exc}"
            ) from exc
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, resolved from its writer's schema to the reader's."""
        if len(data) < HEADER_LENGTH:
            raise CodecError(self.topic, f"message of {len(data)} bytes is shorter than the header")
        if data[:2] != MARKER:
            raise CodecError(self.topic, "not Avro single-object encoding (bad marker bytes)")
        writer = self._writers.get(data[2:HEADER_LENGTH])
        if writer is None:
            raise CodecError(
                self.topic, f"unknown schema fingerprint {data[2:HEADER_LENGTH].hex()}"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_LENGTH)
        try:
            record = cast(dict[str, Any], fastavro.schemaless_reader(body, writer, self.schema))
        except (
            EOFError,
            ValueError,
            TypeError,
            IndexError,
            KeyError,
            UnicodeDecodeError,
            OverflowError,
        ) as exc:
            raise CodecError(self.topic, f"corrupt or truncated body: {exc!r}") from exc
        if body.tell() != len(data):
            raise CodecError(
                self.topic, f"{len(data) - body.tell()} trailing bytes after the record"
            )
        return record
