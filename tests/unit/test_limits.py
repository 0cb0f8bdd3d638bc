"""The per-key token bucket with a hand-moved clock: burst, refill, refusal without cost, keys
apart, and the Retry-After it answers."""

import pytest

from app.ingest.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_the_rate_holds_and_a_refusal_costs_nothing():
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=100, clock=clock)
    assert limiter.take("a", 60) is None and limiter.take("a", 40) is None  # the burst
    assert limiter.take("a", 5) == 1  # empty: 5 updates need 0.5 s, answered as 1 s
    clock.now += 0.5
    assert limiter.take("a", 5) is None  # refilled 5; the refusal took nothing
    assert limiter.take("a", 1) == 1
    clock.now += 1000
    assert limiter.take("a", 100) is None and limiter.take("a", 1) == 1  # capped at the burst


def test_keys_have_their_own_buckets_and_the_wait_is_how_long_the_request_needs():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=10, clock=clock)
    assert limiter.take("flood", 10) is None
    assert limiter.take("flood", 10) == 5  # 10 updates at 2/s
    assert limiter.take("calm", 10) is None  # another key is untouched
    assert limiter.take("flood", 50) == 5  # more than the burst: wait for a full bucket


@pytest.mark.parametrize("rate, burst", [(0, 10), (-1, 10), (5, 0)])
def test_a_limit_needs_a_positive_rate_and_burst(rate, burst):
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)
