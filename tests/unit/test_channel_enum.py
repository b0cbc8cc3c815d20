"""The channel enum matches the Touchpoint schema's Avro enum."""

from __future__ import annotations

from schemas.channels import Channel
from services.common.avro import load_schema


def test_channel_symbols_match_the_touchpoint_schema() -> None:
    schema = load_schema("closedloop.Touchpoint")
    channel_field = next(f for f in schema["fields"] if f["name"] == "channel")
    assert channel_field["type"]["symbols"] == [c.name for c in Channel]
    assert Channel.from_symbol("PAID_SEARCH") == "Paid Search"
