"""The wire format of tracking events (msgspec structs) and decoding with field-named errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

EventType = Literal["pageview", "identify", "form_submit", "conversion", "custom", "offline_touch"]
CLICK_ID_NAMES = ("gclid", "gbraid", "wbraid", "fbclid", "msclkid", "li_fat_id", "ttclid")

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Short = Annotated[str, msgspec.Meta(max_length=512)]
Long = Annotated[str, msgspec.Meta(max_length=8192)]
Moment = str | int


class ClickIds(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Ad click IDs by parameter name."""

    gclid: Short | None = None
    gbraid: Short | None = None
    wbraid: Short | None = None
    fbclid: Short | None = None
    msclkid: Short | None = None
    li_fat_id: Short | None = None
    ttclid: Short | None = None


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One tracking event as a client sends it (unknown fields are rejected)."""

    type: EventType
    anonymous_id: Id
    event_id: Id | None = None
    timestamp: Moment | None = None
    sent_at: Moment | None = None
    session_id: Id | None = None
    url: Long | None = None
    title: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    referrer: Long | None = None
    utm_source: Short | None = None
    utm_medium: Short | None = None
    utm_campaign: Short | None = None
    utm_term: Short | None = None
    utm_content: Short | None = None
    click_ids: ClickIds | None = None
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    traits: dict[str, Any] | None = None
    event_name: Short | None = None
    properties: dict[str, Any] | None = None
    value: str | float | None = None
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Za-z]{3}$")] | None = None
    writeKey: str | None = None  # noqa: N815 - the wire name segment-style clients send


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    """Several events in one request; each member is decoded (and rejected) on its own."""

    batch: list[msgspec.Raw]
    writeKey: str | None = None  # noqa: N815 - the wire name segment-style clients send
    sent_at: Moment | None = None


@dataclass(frozen=True)
class Problem:
    """Why an event (or a request) was not accepted: a machine reason, the field, a message."""

    reason: str
    field: str | None
    message: str


_EVENT_DECODER = msgspec.json.Decoder(Event)
_BATCH_DECODER = msgspec.json.Decoder(Batch)
_AT = re.compile(r" - at `(?:key` in `)?\$\.?([^`]*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def problem_from_error(exc: Exception, prefix: str = "") -> Problem:
    """A Problem naming the field msgspec complained about (``prefix`` is prepended to paths)."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        field: str | None = None
        message = text
        found = _AT.search(text)
        if found:
            field = found.group(1).replace("[...]", "") or None
            message = text[: found.start()]
        for pattern in (_UNKNOWN, _MISSING):
            named = pattern.search(message)
            if named:
                field = f"{field}.{named.group(1)}" if field else named.group(1)
                message = "unknown field" if pattern is _UNKNOWN else "required field is missing"
        if field and prefix:
            field = f"{prefix}.{field}"
        return Problem("invalid_field", field or prefix or None, message)
    return Problem("malformed_json", prefix or None, f"not valid JSON: {text}")


def decode_event(data: bytes) -> Event:
    """Decode one event; raises msgspec.ValidationError/DecodeError (or UnicodeDecodeError)."""
    return _EVENT_DECODER.decode(data)


def decode_batch(data: bytes) -> Batch:
    """Decode a batch envelope, leaving its members as raw JSON."""
    return _BATCH_DECODER.decode(data)


def is_batch_error(exc: Exception) -> bool:
    """True when decoding as one event failed only because the body is a batch envelope."""
    return isinstance(exc, msgspec.ValidationError) and str(exc).startswith(
        "Object contains unknown field `batch`"
    )


DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)


class RejectedMember(msgspec.Struct):
    """One event of a request that was not accepted."""

    index: int
    field: str | None
    problem: str


class Accepted(msgspec.Struct):
    """The answer to a request whose events are durable (200 acknowledged, 202 spooled)."""

    accepted: int
    rejected: list[RejectedMember]
    event_ids: list[str]


class ErrorDetail(msgspec.Struct):
    """What went wrong: the status, a machine reason, the field to blame and the problem."""

    status: int
    reason: str
    field: str | None
    problem: str
    rejected: list[RejectedMember] | None = None


class ErrorBody(msgspec.Struct):
    """Every error answer of the collector."""

    error: ErrorDetail
