"""Token buckets per client address: burst, refill, Retry-After, bounded memory."""

from __future__ import annotations

import pytest

from recsrv.ratelimit import TokenBuckets, retry_after_s


def test_a_burst_then_refusals_until_tokens_come_back() -> None:
    buckets = TokenBuckets(rate_per_s=2.0, burst=3)
    assert [buckets.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 100.0) == pytest.approx(0.5)
    # A refused request takes nothing: a quarter second later half a token is back.
    assert buckets.take("a", 100.25) == pytest.approx(0.25)
    assert buckets.take("a", 100.5) == 0.0
    assert buckets.take("a", 100.5) == pytest.approx(0.5)


def test_addresses_have_buckets_of_their_own() -> None:
    buckets = TokenBuckets(rate_per_s=1.0, burst=1)
    assert buckets.take("a", 0.0) == 0.0
    assert buckets.take("a", 0.0) > 0
    assert buckets.take("b", 0.0) == 0.0


def test_refill_is_capped_at_the_burst() -> None:
    buckets = TokenBuckets(rate_per_s=10.0, burst=2)
    buckets.take("a", 0.0)
    taken = [buckets.take("a", 3600.0) for _ in range(3)]
    assert taken[:2] == [0.0, 0.0]
    assert taken[2] == pytest.approx(0.1)


def test_a_clock_that_goes_back_refills_nothing() -> None:
    buckets = TokenBuckets(rate_per_s=1.0, burst=1)
    assert buckets.take("a", 10.0) == 0.0
    assert buckets.take("a", 5.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 100), (50.0, 0)])
def test_zero_rate_or_burst_turns_limiting_off(rate: float, burst: int) -> None:
    buckets = TokenBuckets(rate_per_s=rate, burst=burst)
    assert not buckets.enabled
    assert all(buckets.take("a", 0.0) == 0.0 for _ in range(1000))
    assert len(buckets) == 0


def test_full_buckets_are_forgotten_and_memory_is_bounded() -> None:
    buckets = TokenBuckets(rate_per_s=1.0, burst=2, max_keys=100)
    for n in range(50):
        buckets.take(f"idle-{n}", 0.0)
    assert len(buckets) == 50
    # Two seconds on, every one of them has refilled: the next take drops them all.
    buckets.take("new", 2.0)
    assert len(buckets) == 1
    for n in range(1000):
        buckets.take(f"busy-{n}", 2.0)
    assert len(buckets) == 100


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after_s(w) for w in (0.001, 0.5, 1.0, 1.01, 7.9)] == [1, 1, 1, 2, 8]


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_s=-1.0, burst=1)
    with pytest.raises(ValueError):
        TokenBuckets(rate_per_s=1.0, burst=1, max_keys=0)
