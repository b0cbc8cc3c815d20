"""What the collector needs from the outside world: a publisher that acknowledges or spools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

Message = tuple[str, str | None, bytes]
"""(topic, key, value) as it goes to the broker."""


class Outcome(Enum):
    """How a set of messages was made durable."""

    ACKNOWLEDGED = "acknowledged"
    SPOOLED = "spooled"


@dataclass(frozen=True)
class Health:
    """What /readyz reports."""

    broker_reachable: bool
    spool_bytes: int
    spool_has_room: bool

    @property
    def ready(self) -> bool:
        return self.broker_reachable or self.spool_has_room


class EventSink(Protocol):
    """Makes messages durable: acknowledged by the broker, or else written to a local spool.

    ``deliver`` raises services.common.errors.UnavailableError when neither is possible
    (spool full), so the caller answers 503 with Retry-After.
    """

    async def start(self) -> None: ...

    async def deliver(self, messages: Sequence[Message]) -> Outcome: ...

    def health(self) -> Health: ...

    async def close(self) -> None: ...


class Publisher(Protocol):
    """The broker client: KafkaPublisher in production, an in-memory fake in unit tests."""

    async def publish_many(
        self, messages: Sequence[tuple[str, str | bytes | None, bytes]]
    ) -> list[Exception | None]: ...

    def close(self, timeout: float = 10.0) -> int: ...
