"""Errors of the crm_ingest that decide an HTTP status (400, 413, 415); 401 and 503 are shared."""

from __future__ import annotations

from services.common.errors import ClosedloopError


class PayloadError(ClosedloopError):
    """An authenticated body we cannot use: answer 400 and keep a copy on crm.invalid."""

    def __init__(self, field: str | None, problem: str, reason: str = "invalid_field") -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem
        self.reason = reason
        self.delivery_id: str | None = None


class BodyTooLargeError(ClosedloopError):
    """The body is larger than the configured limit: answer 413."""


class UnsupportedMediaTypeError(ClosedloopError):
    """The Content-Type is not one the receiver reads: answer 415."""
