"""The collector's compiled Avro encoder writes exactly AvroCodec's bytes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.collector.encoding import RecordEncoder
from services.common.avro import AvroCodec
from tests.samples import tracking_event

CODEC = AvroCodec.for_topic("events.raw")
ENCODER = RecordEncoder(CODEC, tracking_event())
text = st.text(max_size=40)
optional_text = st.none() | text
millis = st.integers(min_value=-(2**40), max_value=4_102_444_800_000)
strings = st.dictionaries(text, text, max_size=4)
money = st.none() | st.decimals(
    min_value=Decimal("-9999999999999999.99"),
    max_value=Decimal("9999999999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)


def test_encoder_is_compiled_for_tracking_events() -> None:
    assert ENCODER.fast


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "event_id": text,
            "type": st.sampled_from(
                ["pageview", "identify", "form_submit", "conversion", "custom", "offline_touch"]
            ),
            "site_id": text,
            "anonymous_id": text,
            "session_id": optional_text,
            "occurred_at": millis,
            "sent_at": st.none() | millis,
            "received_at": millis,
            "url": optional_text,
            "title": optional_text,
            "referrer": optional_text,
            "utm_source": optional_text,
            "utm_medium": optional_text,
            "utm_campaign": optional_text,
            "utm_term": optional_text,
            "utm_content": optional_text,
            "click_ids": strings,
            "event_name": optional_text,
            "email": optional_text,
            "traits": strings,
            "properties": strings,
            "value": money,
            "currency": optional_text,
            "ip": optional_text,
            "user_agent": optional_text,
            "browser": optional_text,
            "os": optional_text,
            "device_type": optional_text,
            "is_bot": st.booleans(),
        }
    )
)
def test_same_bytes_as_avro_codec(record: dict[str, Any]) -> None:
    encoded = ENCODER.encode(record)
    assert encoded == CODEC.encode(record)
    assert CODEC.decode(encoded)["event_id"] == record["event_id"]


def test_a_sample_that_disagrees_disables_the_fast_path() -> None:
    class Lying(AvroCodec):
        def encode(self, record: Any) -> bytes:
            return b"something else"

    lying = Lying(CODEC.topic, CODEC.schema)
    encoder = RecordEncoder(lying, tracking_event())
    assert not encoder.fast
    assert encoder.encode(tracking_event()) == b"something else"


def test_records_it_cannot_write_go_to_avro_codec_for_the_error() -> None:
    import pytest

    from services.common.errors import CodecError

    with pytest.raises(CodecError):
        ENCODER.encode(tracking_event(type="not-a-type"))
