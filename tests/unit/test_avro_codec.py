"""Avro single-object codec: round trips, schema evolution, corrupt bytes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from schemas.topics import ALL_TOPICS
from services.common.avro import AVRO_DIR, MARKER, AvroCodec, schema_fingerprint
from services.common.errors import CodecError
from tests.samples import SAMPLES


@pytest.mark.parametrize("topic", [t.name for t in ALL_TOPICS])
def test_every_topic_round_trips_its_sample(topic: str) -> None:
    codec = AvroCodec.for_topic(topic)
    data = codec.encode(SAMPLES[topic])
    assert data[:2] == MARKER
    assert data[2:10] == codec.fingerprint
    assert codec.decode(data) == SAMPLES[topic]


def test_fingerprint_is_crc64_avro_little_endian() -> None:
    # The Avro specification's fingerprint of the schema "int" is 0x7275d51a3f395c8f.
    assert schema_fingerprint("int") == (0x7275D51A3F395C8F).to_bytes(8, "little")  # type: ignore[arg-type]


def test_every_field_has_a_doc() -> None:
    for topic in ALL_TOPICS:
        raw = json.loads((AVRO_DIR / f"{topic.value_schema}.avsc").read_text())
        missing = [f["name"] for f in raw["fields"] if not f.get("doc")]
        assert not missing, f"{topic.value_schema} fields without doc: {missing}"


V1: dict[str, Any] = {
    "type": "record",
    "name": "Ping",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def _v2_added_field() -> dict[str, Any]:
    v2 = copy.deepcopy(V1)
    v2["fields"].append({"name": "weight", "type": "int", "default": 7})
    return v2


def _v3_removed_optional() -> dict[str, Any]:
    v3 = _v2_added_field()
    v3["fields"] = [f for f in v3["fields"] if f["name"] != "note"]
    return v3


def test_reader_of_v2_reads_v1_and_fills_the_added_field_default() -> None:
    old_bytes = AvroCodec("pings", V1).encode({"id": "a", "note": "hi"})
    reader = AvroCodec("pings", _v2_added_field(), writer_schemas=[V1])
    assert reader.decode(old_bytes) == {"id": "a", "note": "hi", "weight": 7}


def test_reader_of_v2_reads_v2_and_v1_side_by_side() -> None:
    v2 = _v2_added_field()
    reader = AvroCodec("pings", v2, writer_schemas=[V1])
    new_bytes = AvroCodec("pings", v2).encode({"id": "b", "note": None, "weight": 1})
    old_bytes = AvroCodec("pings", V1).encode({"id": "a", "note": None})
    assert [reader.decode(b)["weight"] for b in (new_bytes, old_bytes)] == [1, 7]


def test_removed_optional_field_is_dropped_when_reading_old_data() -> None:
    old_bytes = AvroCodec("pings", _v2_added_field()).encode({"id": "a", "note": "x", "weight": 3})
    reader = AvroCodec("pings", _v3_removed_optional(), writer_schemas=[_v2_added_field()])
    assert reader.decode(old_bytes) == {"id": "a", "weight": 3}


def test_old_reader_reads_new_data_written_without_the_removed_field() -> None:
    new_bytes = AvroCodec("pings", _v3_removed_optional()).encode({"id": "a", "weight": 3})
    reader = AvroCodec("pings", _v2_added_field(), writer_schemas=[_v3_removed_optional()])
    assert reader.decode(new_bytes) == {"id": "a", "note": None, "weight": 3}


def test_unknown_fingerprint_names_topic_and_problem() -> None:
    data = AvroCodec("pings", _v2_added_field()).encode({"id": "a", "weight": 1})
    with pytest.raises(CodecError, match=r"^pings: unknown schema fingerprint [0-9a-f]{16}$"):
        AvroCodec("pings", V1).decode(data)


@pytest.mark.parametrize("cut", [0, 1, 5, 10])
def test_truncated_header_is_rejected(cut: int) -> None:
    data = AvroCodec("pings", V1).encode({"id": "abc", "note": "hello"})
    with pytest.raises(CodecError, match="pings: message of .* shorter than the header"):
        AvroCodec("pings", V1).decode(data[:cut] if cut < 10 else data[:9])


def test_truncated_body_is_rejected() -> None:
    data = AvroCodec("pings", V1).encode({"id": "abc", "note": "hello"})
    with pytest.raises(CodecError, match="pings: corrupt or truncated body"):
        AvroCodec("pings", V1).decode(data[:-3])


def test_bad_marker_is_rejected() -> None:
    data = AvroCodec("pings", V1).encode({"id": "abc"})
    with pytest.raises(CodecError, match="bad marker"):
        AvroCodec("pings", V1).decode(b"\x00\x01" + data[2:])


def test_trailing_garbage_is_rejected() -> None:
    data = AvroCodec("pings", V1).encode({"id": "abc"})
    with pytest.raises(CodecError, match="trailing bytes"):
        AvroCodec("pings", V1).decode(data + b"\x00")


def test_encoding_a_record_that_does_not_match_names_the_topic() -> None:
    with pytest.raises(CodecError, match="^pings: record does not match"):
        AvroCodec("pings", V1).encode({"id": 12})


def test_timestamp_outside_the_datetime_range_is_a_codec_error() -> None:
    def record_schema(field_type: Any) -> dict[str, Any]:
        return {"type": "record", "name": "T", "fields": [{"name": "at", "type": field_type}]}

    timestamps = AvroCodec(
        "pings", record_schema({"type": "long", "logicalType": "timestamp-millis"})
    )
    # The same body bytes as a plain long: 2**62 ms is far past datetime.max.
    body = AvroCodec("pings", record_schema("long")).encode({"at": 2**62})[10:]
    with pytest.raises(CodecError, match="pings: corrupt or truncated body"):
        timestamps.decode(MARKER + timestamps.fingerprint + body)
