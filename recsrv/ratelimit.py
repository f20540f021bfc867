"""Token buckets, one per key (a client address): pure code, the clock is passed in.

Each key holds up to `burst` tokens and regains `rate_per_s` tokens a second; a request
takes one. Buckets are kept in least-recently-used order, so the ones that have refilled
completely (indistinguishable from a new bucket) are dropped from the front as they
appear, and at most `max_keys` are ever held: memory stays bounded whatever the number
of addresses.
"""

from __future__ import annotations

import math


class TokenBuckets:
    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 100_000) -> None:
        if rate_per_s < 0 or burst < 0 or max_keys < 1:
            raise ValueError("rate_per_s and burst must be >= 0, max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        # key → (tokens, time of that count); dict order is least recently used first.
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        """A rate or a burst of 0 turns limiting off (design section 7)."""
        return self.rate_per_s > 0 and self.burst > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> float:
        """Take a token for `key`: 0.0 if there was one, else the seconds until there is."""
        if not self.enabled:
            return 0.0
        tokens = self._tokens(self._buckets.pop(key, None), now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate_per_s
        self._forget_idle(now)
        return wait

    def _tokens(self, bucket: tuple[float, float] | None, now: float) -> float:
        if bucket is None:
            return float(self.burst)
        tokens, then = bucket
        # A clock that went backwards refills nothing (and takes nothing back).
        return min(float(self.burst), tokens + max(now - then, 0.0) * self.rate_per_s)

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            key = next(iter(self._buckets))
            full = self._tokens(self._buckets[key], now) >= self.burst
            if not full and len(self._buckets) <= self.max_keys:
                return
            del self._buckets[key]


def retry_after_s(wait: float) -> int:
    """The Retry-After header's whole seconds for a wait: rounded up, at least 1."""
    return max(1, math.ceil(wait))
