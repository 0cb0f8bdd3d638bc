"""Per-key rate limits at ingest: a token bucket per API key, in updates.

Each key's bucket holds up to ``burst`` updates and refills at ``rate`` updates a second; a
request of ``n`` updates takes ``n`` or is refused whole, with the seconds until it would fit.
A refused request takes nothing, so a client that backs off as told gets through. Buckets are
per worker: behind a load balancer that spreads a key's requests over N workers, the key may
send up to N times the rate. Pure: the clock is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from time import monotonic


class Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens, self.at = tokens, at


class RateLimiter:
    """``take(name, n)``: None when the key ``name`` may send ``n`` updates now (they are counted),
    else the whole seconds to wait before asking again (at least 1, for ``Retry-After``)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and burst")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, Bucket] = {}

    def take(self, name: str, n: int) -> int | None:
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if n <= bucket.tokens:
            bucket.tokens -= n
            return None
        return max(1, math.ceil((min(n, self.burst) - bucket.tokens) / self.rate))


__all__ = ["RateLimiter"]
