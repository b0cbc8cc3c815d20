"""The root exception of closedloop and the subclasses that drive a decision."""

from __future__ import annotations


class ClosedloopError(Exception):
    """Root of every error closedloop raises on purpose."""


class PoisonRecordError(ClosedloopError):
    """A record that can never be processed: dead-letter it and move on."""


class CodecError(PoisonRecordError):
    """Bytes that do not decode (or a record that does not encode) under a known schema."""

    def __init__(self, topic: str, problem: str) -> None:
        super().__init__(f"{topic}: {problem}")
        self.topic = topic
        self.problem = problem


class AuthenticationError(ClosedloopError):
    """Missing or wrong credentials, a bad signature, a stale or replayed request: answer 401."""


class UnavailableError(ClosedloopError):
    """A dependency (broker, warehouse, spool) cannot take work now: answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after_seconds: int = 5) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ConfigurationError(ClosedloopError):
    """Settings or files that make the service unable to start."""
