"""Pure request policy: per-key token buckets and CORS origin patterns."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """Events per second with a burst of one second's worth; a big batch may borrow ahead.

    A request is let through when the bucket holds its cost (or is full, for a batch
    larger than the burst); the bucket may then go negative, delaying later requests.
    """

    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate=rate, tokens=max(rate, 1.0), updated=now)

    @property
    def capacity(self) -> float:
        return max(self.rate, 1.0)

    def take(self, cost: int, now: float) -> float:
        """Take ``cost`` tokens: 0.0 when allowed, else the seconds to wait before retrying."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(float(cost), self.capacity)
        if self.tokens >= needed:
            self.tokens -= cost
            return 0.0
        return (needed - self.tokens) / self.rate


def retry_after_seconds(wait: float) -> int:
    """A Retry-After header value (whole seconds, at least 1)."""
    return max(1, math.ceil(wait))


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    """True when ``origin`` matches '*', an exact origin, or 'scheme://*.domain' (subdomains)."""
    origin = origin.rstrip("/").lower()
    for pattern in patterns:
        pattern = pattern.rstrip("/").lower()
        if pattern in ("*", origin):
            return True
        if "://*." in pattern:
            scheme, _, domain = pattern.partition("://*.")
            prefix = f"{scheme}://"
            if origin.startswith(prefix) and origin[len(prefix) :].split(":")[0].endswith(
                f".{domain}"
            ):
                return True
    return False
